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

/* float32 inference (no training cache) with a packed-weight cache: the same results as
   fr_forward_f32 bit for bit, without repacking the weights into the kernel's panels on
   every call. cache: fr_weight_cache_size(d) floats owned by the caller, ZEROED before
   its first use, then handed to every call for the same layer-direction (one cache per
   calling thread: a call writes it). Each call compares w_ih and w_hh with the copy the
   cache keeps (bit for bit) and repacks what changed, so weights modified in place are
   always seen. The size depends on the cell, input and hidden sizes only. */
size_t fr_weight_cache_size(const fr_dims *d);
int fr_forward_cached_f32(const fr_dims *d, float *out, float *h_n, float *c_n,
                          const float *x, const int *lengths, const float *h0,
                          const float *c0, const float *w_ih, const float *w_hh,
                          const float *b_ih, const float *b_hh, float *ws, float *cache,
                          fr_sgemm_t gemm);

/* Backward (after a training forward with the same d, x, lengths and weights).
   d_out (T,B,ld) time order or NULL; d_h_n, d_c_n (B,H) or NULL.
   dx (T,B,I): written (accumulate_dx == 0) or added to (accumulate_dx == 1); NULL: dX
   is not computed (every other output stays the same, bit for bit).
   dw_ih (GH,I), dw_hh (GH,H), db_ih, db_hh (GH): ADDED to.
   dh0, dc0 (B,H): written (dc0 LSTM only, else NULL).
   store: the forward's; used up by an LSTM backward, which writes its gate gradients
   over it (same (T,B,4H) layout: no buffer of its own for them). Run a new training
   forward before another backward.
   ws: fr_backward_workspace(d) elements. */
int fr_backward_f32(const fr_dims *d, float *dx, float *dw_ih, float *dw_hh,
                    float *db_ih, float *db_hh, float *dh0, float *dc0,
                    const float *d_out, const float *d_h_n, const float *d_c_n,
                    const float *h_all, const float *c_all, float *store,
                    const float *x, const int *lengths,
                    const float *w_ih, const float *w_hh,
                    int accumulate_dx, float *ws, fr_sgemm_t gemm);
int fr_backward_f64(const fr_dims *d, double *dx, double *dw_ih, double *dw_hh,
                    double *db_ih, double *db_hh, double *dh0, double *dc0,
                    const double *d_out, const double *d_h_n, const double *d_c_n,
                    const double *h_all, const double *c_all, double *store,
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

/* 1 when fr_forward_f32 computes each step of d as one product [x_t, h] [W_ih, W_hh]^T
   (float32 with the packed kernel, LSTM/RNN, unless the call may take the unit-split
   path, which every cell may); 0 when it computes x_t W_ih^T and h W_hh^T apart. */
int fr_forward_fuses(const fr_dims *d);
/* 1 when float32 inference of d, its batch as one chunk, takes the unit-split path
   (hidden units over the threads) given at least 2 threads (d->n_threads): the layers
   then keep a small batch in one chunk. */
int fr_splits_as_one_chunk(const fr_dims *d);

/* ---- Streaming inference (stream.c) ----
   One step (or a few) at a time over a stack of L unidirectional layers of one cell and
   an optional dense head, for B running sequences whose state stays in the stream's own
   buffer (ws, made by fr_stream_init_*): the same float operations, in the same order,
   as fr_forward on the whole sequences followed by fr_dense_forward on its outputs, so
   the results are bitwise those of the full forward (float32 with the packed kernel;
   with BLAS the row grouping of the products differs and only rounding agrees).
   The weights are copied (packed) into ws once; a step only reads them.
   Legend: L layers, B batch, I input features (embedding dim for tokens), H hidden,
   M head outputs (0: no head, the stream returns the top layer's h), K steps, V vocab. */
typedef struct {
    int cell;     /* enum fr_cell */
    int layers;   /* L */
    int batch;    /* B */
    int input;    /* I */
    int hidden;   /* H */
    int outputs;  /* M, 0 for none */
    int chunk;    /* samples per work item of the fr_forward being reproduced (its d.chunk) */
    int scaled;   /* float input standardised by (x - mean) / scale */
    int vocab;    /* V: token input (ids -> rows of an (V+1, I) table); 0: float input */
} fr_stream_dims;
#define FR_EBADVALUE 2   /* a NaN/inf input or a negative token id: nothing was changed */

/* elements of the call's real type that ws holds (0: bad sizes or overflow) */
size_t fr_stream_workspace(const fr_stream_dims *d);
/* Copies/packs the weights into ws and zeroes the state.
   w_ih[k] (GH, I_k) with I_0 = I, I_k = H; w_hh[k] (GH, H); b_ih[k], b_hh[k] (GH);
   head_w (M, H), head_b (M) (NULL when M == 0); mean, scale (I) when d->scaled.
   emb (V+1, I) and known (V) bytes for tokens are NOT copied: fr_stream_step reads them. */
int fr_stream_init_f32(const fr_stream_dims *d, float *ws, const float *const *w_ih,
                       const float *const *w_hh, const float *const *b_ih,
                       const float *const *b_hh, const float *head_w, const float *head_b,
                       const float *mean, const float *scale);
int fr_stream_init_f64(const fr_stream_dims *d, double *ws, const double *const *w_ih,
                       const double *const *w_hh, const double *const *b_ih,
                       const double *const *b_hh, const double *head_w, const double *head_b,
                       const double *mean, const double *scale);
/* The state: h, c (L, B, H) (c LSTM only, else NULL) read from ws (write == 0) or
   written into it (write == 1). */
int fr_stream_state_f32(const fr_stream_dims *d, float *ws, float *h, float *c, int write);
int fr_stream_state_f64(const fr_stream_dims *d, double *ws, double *h, double *c, int write);
/* Advances K steps. Input: x (B, K, I) batch-first floats, or ids (B, K) token ids with
   emb (V+1, I) and known (V) (an id >= V or not known reads row V). Output (width
   W = M, or H without a head): every == 1: out (B, K, W), the output of each step;
   every == 0: out (B, W), the output after the last step. FR_EBADVALUE (state unchanged)
   for a non-finite x or a negative id. */
int fr_stream_step_f32(const fr_stream_dims *d, float *ws, int K, const float *x,
                       const long long *ids, const float *emb, const unsigned char *known,
                       int every, float *out, fr_sgemm_t gemm);
int fr_stream_step_f64(const fr_stream_dims *d, double *ws, int K, const double *x,
                       const long long *ids, const double *emb, const unsigned char *known,
                       int every, double *out, fr_dgemm_t gemm);

/* OpenMP facts for show_config / set_num_threads. */
int fr_openmp_enabled(void);
int fr_max_threads(void);
/* Threads the calling thread's last call of the core used, the most any of its calls
   used since the last reset (every parallel region counts: recurrences, dense, cross-
   entropy), and the reset. Thread-local: each calling thread sees its own calls. */
int fr_last_threads(void);
int fr_threads_used_max(void);
void fr_threads_used_reset(void);

#ifdef __cplusplus
}
#endif
#endif /* FASTRNN_H */
