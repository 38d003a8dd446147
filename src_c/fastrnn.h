/* fastrnn.h — the whole C API of fastrnn's recurrent core.

   One call runs ONE layer in ONE direction over a whole batch, time-major or batch-first:
   LSTM, GRU (PyTorch's form: reset gate applied after the recurrent product) or a
   plain RNN with tanh/relu, forward or backward (full BPTT), float32 or float64.
   Multi-layer and bidirectional stacking and dropout live in Python
   (fastrnn/layers.py); this core knows nothing of Python. Beside the recurrence: the
   dense head, the fused softmax cross-entropy and the embedding gradient (below).

   Legend for the shape comments:
     T = steps, B = batch, I = input features, H = hidden units,
     G = gates per cell (LSTM 4, GRU 3, RNN 1), GH = G*H,
     S = values stored per step and sample for backward (LSTM 4H, GRU 4H, RNN 0),
     ld = row stride of out / d_out (H, or 2H inside a bidirectional layer).
   "time order"  : row (t, b) holds time step t of sample b; with d.batch_first the
                   buffers so marked are (B,T,.) instead of (T,B,.), same meaning.
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
    int n_threads;  /* OpenMP threads at most (BLAS runs single-threaded inside them) */
    int chunk;      /* samples per work item; fixed => results independent of n_threads */
    int ld;         /* row stride of out and d_out, >= H */
    int batch_first;/* x, out, d_out, dx laid out (B,T,.) instead of (T,B,.) */
} fr_dims;

/* What each cell is, described once (recurrence.c): names are comma-separated in
   PyTorch's order; store_width is S in units of H. */
typedef struct {
    const char *name;    /* "lstm", "gru", "rnn_tanh", "rnn_relu" */
    int n_gates;         /* G */
    const char *gates;   /* gate blocks of w_ih / w_hh rows, e.g. "i,f,g,o" */
    const char *states;  /* state tensors carried between steps: "h,c" or "h" */
    const char *stored;  /* blocks kept per step for backward (store), "" for none */
    int store_width;     /* S / H */
} fr_cell_desc;
const fr_cell_desc *fr_cell_info(int cell);   /* NULL for an unknown cell */

/* Gates per cell and values stored per (step, sample) for backward (from fr_cell_info). */
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

/* ---- The per-step output head and the embedding (dense.c, xent.c, embedding.c) ----
   Same rules as the recurrence: explicit sizes and threads, caller-provided workspace,
   scipy's BLAS held to one thread by the caller, results independent of n_threads. */

/* Dense over rows: n rows, k in_features, m out_features.
   ws: fr_dense_workspace(n, k, m) elements of the call's real type (0: sizes overflow). */
size_t fr_dense_workspace(int n, int k, int m);
/* y (n,m) = x (n,k) w^T + b;  w (m,k), b (m). */
int fr_dense_forward_f32(int n, int k, int m, int n_threads, float *y, const float *x,
                         const float *w, const float *b, float *ws, fr_sgemm_t gemm);
int fr_dense_forward_f64(int n, int k, int m, int n_threads, double *y, const double *x,
                         const double *w, const double *b, double *ws, fr_dgemm_t gemm);
/* dx (n,k) = dy w (written; NULL: not wanted);  dw (m,k) += dy^T x;  db (m) += sum_rows dy.
   dy (n,m), x (n,k), w (m,k). */
int fr_dense_backward_f32(int n, int k, int m, int n_threads, float *dx, float *dw,
                          float *db, const float *dy, const float *x, const float *w,
                          float *ws, fr_sgemm_t gemm);
int fr_dense_backward_f64(int n, int k, int m, int n_threads, double *dx, double *dw,
                          double *db, const double *dy, const double *x, const double *w,
                          double *ws, fr_dgemm_t gemm);

/* Softmax cross-entropy over rows: z (n,C), y (n) in [0,C), w (n) or NULL (ones).
   *loss = sum_r w_r (-log softmax(z_r)[y_r]) (double, not scaled);
   dz (n,C) = scale * w_r * (softmax(z_r) - onehot(y_r)) when dz is not NULL.
   partials: fr_softmax_xent_workspace(n) doubles. FR_EBADDIMS for a label out of range. */
size_t fr_softmax_xent_workspace(int n);
int fr_softmax_xent_f32(int n, int C, int n_threads, float *dz, double *loss, const float *z,
                        const int *y, const float *w, double scale, double *partials);
int fr_softmax_xent_f64(int n, int C, int n_threads, double *dz, double *loss,
                        const double *z, const int *y, const double *w, double scale,
                        double *partials);

/* Embedding gradient, row-sparse: ids (B,T) in [0,V) at valid positions, lengths (B) in
   [0,T], d_out (B,T,E). Writes the distinct ids (except skip_id; -1: none) in order of
   first appearance (b, then t) to rows_out and the sum of their d_out rows to values_out
   (capacity rows at most); *count of them. map: V ints, -1 on entry, -1 again on exit. */
int fr_embedding_backward_f32(int B, int T, int E, int V, int skip_id, const int *ids,
                              const int *lengths, const float *d_out, int *map,
                              int capacity, int *rows_out, float *values_out, int *count);
int fr_embedding_backward_f64(int B, int T, int E, int V, int skip_id, const int *ids,
                              const int *lengths, const double *d_out, int *map,
                              int capacity, int *rows_out, double *values_out, int *count);

/* OpenMP facts for show_config / set_num_threads. */
int fr_openmp_enabled(void);
int fr_max_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* FASTRNN_H */
