/* fastrnn.h — the whole C API of fastrnn's recurrent core.

   One call runs ONE layer in ONE direction over a whole (time-major) batch:
   LSTM, GRU (PyTorch's form: reset gate applied after the recurrent product) or a
   plain RNN with tanh/relu, forward or backward (full BPTT), float32 or float64.
   Multi-layer and bidirectional stacking, dropout and batch-first conversion live
   in Python (fastrnn/layers.py); this core knows nothing of Python.

   Legend for the shape comments:
     T = steps, B = batch, I = input features, H = hidden units,
     G = gates per cell (LSTM 4, GRU 3, RNN 1), GH = G*H,
     S = values stored per step and sample for backward (LSTM 4H, GRU 4H, RNN 0),
     ld = row stride of out / d_out (H, or 2H inside a bidirectional layer).
   "time order"  : row (t, b) holds time step t of sample b.
   "loop order"  : row (t, b) holds the t-th step the recurrence took for sample b;
                   equal to time order except for the reverse direction, where
                   loop step t of sample b is time step len_b - 1 - t.

   BLAS: only through the Fortran gemm pointers that scipy.linalg.cython_blas exports,
   which the caller must hold to ONE thread during the call: all parallelism is this
   core's OpenMP (OpenMP x BLAS threads would oversubscribe the cores).
   Threads: one OpenMP region per call; work items are fixed-size chunks of samples
   (d.chunk) and fixed-size blocks of the large GEMMs, so results do not depend on the
   thread count. */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Fortran BLAS gemm, exactly as scipy.linalg.cython_blas declares it. */
typedef void (*fr_sgemm_t)(char *ta, char *tb, int *m, int *n, int *k, float *alpha,
                           float *a, int *lda, float *b, int *ldb, float *beta,
                           float *c, int *ldc);
typedef void (*fr_dgemm_t)(char *ta, char *tb, int *m, int *n, int *k, double *alpha,
                           double *a, int *lda, double *b, int *ldb, double *beta,
                           double *c, int *ldc);

enum fr_cell { FR_LSTM = 0, FR_GRU = 1, FR_RNN_TANH = 2, FR_RNN_RELU = 3 };

typedef struct {
    int cell;       /* enum fr_cell */
    int batch;      /* B */
    int steps;      /* T */
    int input;      /* I */
    int hidden;     /* H */
    int reverse;    /* 0: walk t = 0..len_b-1; 1: walk t = len_b-1..0 */
    int n_threads;  /* OpenMP threads for the recurrence and BLAS threads outside it */
    int chunk;      /* samples per work item; fixed => results independent of n_threads */
    int ld;         /* row stride of out and d_out, >= H */
    int batch_first;/* x, out, d_out, dx laid out (B,T,.) instead of (T,B,.) */
} fr_dims;

/* Gates per cell and values stored per (step, sample) for backward. */
int fr_gates(int cell);
int fr_store_width(int cell, int hidden);

/* Workspace sizes in elements of the call's real type (float or double).
   Return 0 when the sizes overflow size_t. */
size_t fr_forward_workspace(const fr_dims *d);
size_t fr_backward_workspace(const fr_dims *d);

/* Return codes. */
#define FR_OK 0
#define FR_EBADDIMS 1

/* Forward.
   out    (T,B,ld) time order: written for t < len_b, zero for t >= len_b; or NULL when
          only the final state is wanted.
   h_n    (B,H), c_n (B,H) (LSTM only, else NULL): the state after the last valid step.
   Training cache (all NULL for inference, which then keeps only the running state):
     h_all (T+1,B,H) loop order, h_all[0] = h0;  c_all (T+1,B,H) (LSTM only);
     store (T,B,S) loop order (NULL allowed when S == 0).
   x (T,B,I) time order; lengths (B) in [1,T]; h0, c0 (B,H) (c0 LSTM only);
   w_ih (GH,I), w_hh (GH,H), b_ih (GH), b_hh (GH);
   ws: fr_forward_workspace(d) elements. */
int fr_forward_f32(const fr_dims *d, float *out, float *h_n, float *c_n,
                   float *h_all, float *c_all, float *store,
                   const float *x, const int *lengths, const float *h0, const float *c0,
                   const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh,
                   float *ws, fr_sgemm_t gemm);
int fr_forward_f64(const fr_dims *d, double *out, double *h_n, double *c_n,
                   double *h_all, double *c_all, double *store,
                   const double *x, const int *lengths, const double *h0, const double *c0,
                   const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh,
                   double *ws, fr_dgemm_t gemm);

/* Backward (after a training forward with the same d, x, lengths and weights).
   d_out (T,B,ld) time order or NULL; d_h_n, d_c_n (B,H) or NULL.
   dx (T,B,I): written (accumulate_dx == 0) or added to (accumulate_dx == 1).
   dw_ih (GH,I), dw_hh (GH,H), db_ih, db_hh (GH): ADDED to.
   dh0, dc0 (B,H): written (dc0 LSTM only, else NULL).
   ws: fr_backward_workspace(d) elements. */
int fr_backward_f32(const fr_dims *d, float *dx, float *dw_ih, float *dw_hh,
                    float *db_ih, float *db_hh, float *dh0, float *dc0,
                    const float *d_out, const float *d_h_n, const float *d_c_n,
                    const float *h_all, const float *c_all, const float *store,
                    const float *x, const int *lengths,
                    const float *w_ih, const float *w_hh,
                    int accumulate_dx, float *ws, fr_sgemm_t gemm);
int fr_backward_f64(const fr_dims *d, double *dx, double *dw_ih, double *dw_hh,
                    double *db_ih, double *db_hh, double *dh0, double *dc0,
                    const double *d_out, const double *d_h_n, const double *d_c_n,
                    const double *h_all, const double *c_all, const double *store,
                    const double *x, const int *lengths,
                    const double *w_ih, const double *w_hh,
                    int accumulate_dx, double *ws, fr_dgemm_t gemm);

/* OpenMP facts for show_config / set_num_threads. */
int fr_openmp_enabled(void);
int fr_max_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* FASTRNN_H */
