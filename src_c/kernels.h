/* kernels.h — fastrnn's own float32 GEMM for the products inside the recurrence.

   Why: inside the time loop the same weight matrix meets a small block of rows at every
   step; a BLAS call repacks the whole weight matrix each time (for LSTM H=128 that is
   256 KB of traffic per 2 MFLOP). Here the weights are packed ONCE per call into
   column panels and every step runs a register-blocked AVX-512 micro-kernel over them.
   Only float32 and only on CPUs with AVX-512F (checked at run time); everything else
   uses scipy's BLAS. */
#ifndef FASTRNN_KERNELS_H
#define FASTRNN_KERNELS_H
#include <stddef.h>

#define FR_NR 32   /* output columns per packed panel (two 16-float vectors) */

/* 1 when the running CPU has AVX-512F, the kernel was compiled in and FASTRNN_PORTABLE
   is not set. */
int fr_kernel_available(void);
/* 1 when none of the n values is NaN or infinite (kernels.c) */
int fr_all_finite_f32(const float *x, size_t n);
int fr_all_finite_f64(const double *x, size_t n);
/* fr_kernel_available(), taken once when the library loads: every AVX-512 path (the
   kernels, vmath.c) is used only when it is 1. */
extern int fr_avx512;
/* Elements of a packed matrix with n output columns and k inner dimension. */
size_t fr_packed_size(int n, int k);
/* Pack W (n x k, row-major, ld ldw) for C = A W^T:  bp[p][kk][j] = W[p*NR+j][kk]. */
void fr_pack_wt(float *bp, const float *w, int n, int k, int ldw);
/* Pack [W1, W2] (n x (k1+k2), W1 (n x k1), W2 (n x k2)) for C = [A1, A2] [W1, W2]^T. */
void fr_pack_wt2(float *bp, const float *w1, int k1, int ld1, const float *w2, int k2,
                 int ld2, int n);
/* Pack W (k x n, row-major, ld ldw) for C = A W:    bp[p][kk][j] = W[kk][p*NR+j]. */
void fr_pack_w(float *bp, const float *w, int k, int n, int ldw);
/* C (m x n, ld ldc) = A (m x k, ld lda) . packed  (+ C when accumulate). */
void fr_gemm_packed(int m, int n, int k, const float *a, int lda, const float *bp,
                    int accumulate, float *c, int ldc);
/* C = A . packed (no accumulate), bitwise as fr_gemm_packed, for the m = 1-3 rows of a
   recurrence step: the panels go two at a time, first to last, or last to first when
   `backward`. Alternating the direction from one step to the next starts each step on
   the panels the previous one read last, still in L1 (the rest streams from L2). */
void fr_gemm_packed_alt(int m, int n, int k, const float *a, int lda, const float *bp,
                        float *c, int ldc, int backward);
/* C (m x n, ld ldc) (+)= A (m x k, ld lda) W^T, W (n x k, ld ldw) unpacked: one fixed
   dot product per element, so each row's result is independent of m (small heads). */
void fr_gemm_rowdot(int m, int n, int k, const float *a, int lda, const float *w, int ldw,
                    int accumulate, float *c, int ldc);
/* C (m x n) (+)= A^T B, A (K x m, ld lda), B (K x n, ld ldb), row-major, unpacked. */
void fr_gemm_tn(int m, int n, int K, const float *a, int lda, const float *b, int ldb,
                int accumulate, float *c, int ldc);
/* C1 (m x n1) = A^T B1 and C2 (m x n2) = A^T B2 in one pass over A (K x m): each copy
   of A's tiles serves both. Every element sums its K terms in the order fr_gemm_tn does. */
void fr_gemm_tn2(int m, int K, const float *a, int lda, int n1, const float *b1, int ldb1,
                 float *c1, int ldc1, int n2, const float *b2, int ldb2, float *c2, int ldc2);

/* acc (ni x GH) += sum over rows r < n of x_r^T g_r, x_r = x + xrow[r] * ni, g_r = g[r]
   (GH), each element adding its rows' products in row order, one FMA each: the
   AVX-512 form of recurrence.c's add_outer (whose compiled clone rounded the products
   of a tail of 8-15 columns apart, so GH % 16 >= 8 gives other last bits than before
   this kernel; every other element is bitwise the same). Returns 0 (nothing done)
   without the kernel or for ni outside [1, FR_ADD_OUTER_MAX_I]. */
#define FR_ADD_OUTER_MAX_I 8
int fr_add_outer_f32(float *acc, const float *x, const size_t *xrow, float *const *g,
                     int n, int ni, int GH);

/* float32 sigmoid / tanh in place over n floats (vmath.c); only when fr_avx512. */
void fr_sigmoid_avx512(float *x, int n);
void fr_tanh_avx512(float *x, int n);
/* lstm.c's / gru.c's float32 forward rows, fused (vmath.c); only when fr_avx512. fast:
   bf16 inference's cheaper activations (errors of a few 1e-6; see vmath.c). */
void fr_lstm_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                 const float *b_ih, const float *b_hh, float *h, int ldh,
                                 float *c, float *store, float *h_keep, float *c_keep,
                                 int fast);
void fr_gru_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                const float *b_ih, const float *b_hh, float *h, int ldh,
                                float *store, float *h_keep, int fast);
/* one GRU inference row, float32 activations, from h_prev into h (vmath.c; only when
   fr_avx512): the unit-split path's step without copying h_prev into h first */
void fr_gru_row_forward_from_avx512(int H, const float *xp, const float *a,
                                    const float *b_ih, const float *b_hh,
                                    const float *h_prev, float *h);
/* rnn.c's forward rows with fast's cheaper tanh, for bf16 inference (vmath.c) */
void fr_rnn_rows_forward_fast_avx512(int n, int H, int relu, const float *xp,
                                     const float *a, const float *b_ih, const float *b_hh,
                                     float *h, int ldh);
/* lstm.c's float32 backward rows, fused (vmath.c); only when fr_avx512. */
void fr_lstm_rows_backward_avx512(int n, int H, const float *store, const float *c_prev,
                                  const float *c_t, float *dh, float *dc, float *dgh);
/* gru.c's float32 backward rows, fused (vmath.c); only when fr_avx512. */
void fr_gru_rows_backward_avx512(int n, int H, const float *store, const float *h_prev,
                                 float *dh, float *dgh, float *const *dgi_rows);
#endif
