/* recurrence.c — drives one layer-direction of any cell over a batch, forward and backward.

   The algorithm (as cuDNN / oneDNN do it, see shared/DESIGN.md):
   forward   - the batch is cut into fixed-size chunks of samples; one OpenMP region per
               call hands chunks to threads, each thread running its chunk through ALL steps
               with single-threaded BLAS (samples are independent: no barrier per step);
             - within a chunk the input projection W_ih x of a block of steps is ONE GEMM
               (rows gathered in loop order, so the reverse direction reads step len_b-1-t
               without a reversed copy of the data);
             - only h_{t-1} W_hh^T stays inside the time loop, followed by the cell's
               fused gate math (lstm.c, gru.c, rnn.c).
   backward  - the same chunks walk time in reverse, producing the gate gradients dG and
               dh_{t-1} = dG W_hh (+ the cell's direct path; LSTM writes dG over the gates
               its forward stored, same layout, so a training forward serves one
               backward); dW_hh, dW_ih and dX are left
               to large GEMMs after the loop, cut into pieces fixed by the problem (segments
               of rows for the weight gradients, blocks of rows for dX) that the same
               OpenMP threads share, each piece on single-threaded BLAS. All of it in
               loop order: x is gathered into loop order for dW_ih, and dX, computed
               in loop order, is scattered back to x's rows.
   Variable lengths: past its length a sample carries its state unchanged, writes zero
   output and gets zero dG, so the big GEMMs need no special case.
   x, out, d_out and dx are read and written in place, time-major (T,B,.) or batch-first
   (B,T,.) (fr_row); only the recurrence's own buffers are in loop order.
   Not here: layers, directions stacking, dropout (fastrnn/layers.py). */
#ifndef FR_TEMPLATE
#include "threads.h"
#ifdef _OPENMP
int fr_openmp_enabled(void) { return 1; }
int fr_max_threads(void) { return omp_get_max_threads(); }
#else
int fr_openmp_enabled(void) { return 0; }
int fr_max_threads(void) { return 1; }
#endif

/* the calling thread's record of its calls' team sizes (threads.h) */
static _Thread_local int fr_tls_last_threads = 0, fr_tls_max_threads = 0;
void fr_note_threads(int n)
{
    fr_tls_last_threads = n;
    if (n > fr_tls_max_threads) fr_tls_max_threads = n;
}
int fr_last_threads(void) { return fr_tls_last_threads; }
int fr_threads_used_max(void) { return fr_tls_max_threads; }
void fr_threads_used_reset(void) { fr_tls_last_threads = fr_tls_max_threads = 0; }

#include <stdint.h>
#include <stdatomic.h>
#include "kernels.h"
#include "layout.h"
#include "sync.h"
#define FR_TEMPLATE "recurrence.c"
#include "instantiate.h"

#else /* template body */

#if FR_IS_FLOAT
/* Type-independent helpers: defined once, in the float pass. */
#define FR_XBLOCK 32  /* steps whose input projection is one GEMM per chunk */
#define FR_DEFAULT_CHUNK 16
#define FR_MAX_CHUNK 256         /* samples per work item at most (stack arrays) */
#define FR_GEMM_BLOCK_ROWS 512   /* (t, b) rows per block of the dX GEMM */
#define FR_MIN_WORK 4e6          /* multiply-adds per thread below which threads do not pay */

/* Each cell described once, indexed by enum fr_cell; Python reads it (_core.cell_info)
   instead of repeating gate counts. `stored` must match what the cell's *_rows_forward
   writes into store (lstm.c, gru.c, rnn.c). */
static const fr_cell_desc fr_cells[] = {
    {"lstm", 4, "i,f,g,o", "h,c", "i,f,g,o", 4},
    {"gru", 3, "r,z,n", "h", "r,z,n,hn", 4},
    {"rnn_tanh", 1, "h", "h", "", 0},
    {"rnn_relu", 1, "h", "h", "", 0},
};

const fr_cell_desc *fr_cell_info(int cell)
{
    return cell >= FR_LSTM && cell <= FR_RNN_RELU ? &fr_cells[cell] : NULL;
}

int fr_gates(int cell)
{
    return cell >= FR_LSTM && cell <= FR_RNN_RELU ? fr_cells[cell].n_gates : 1;
}

int fr_store_width(int cell, int hidden)
{
    return cell >= FR_LSTM && cell <= FR_RNN_RELU ? fr_cells[cell].store_width * hidden : 0;
}

static int fr_chunk(const fr_dims *d)
{
    int c = d->chunk > 0 ? d->chunk : FR_DEFAULT_CHUNK;
    return c < FR_MAX_CHUNK ? c : FR_MAX_CHUNK;
}
static int fr_nchunks(const fr_dims *d) { return (d->batch + fr_chunk(d) - 1) / fr_chunk(d); }
/* Threads worth waking for this call: at most one per FR_MIN_WORK multiply-adds, so tiny
   calls stay on one thread (a thread the OS has paused would stall the whole region
   at its barrier, which costs far more than a tiny call takes when the machine is busy).
   The thread count never changes results: work is cut into fixed chunks. */
static int fr_useful_threads(const fr_dims *d)
{
#ifndef _OPENMP
    (void)d;
    return 1;                    /* built without OpenMP: everything on the caller's thread */
#endif
    int nt = d->n_threads < 1 ? 1 : d->n_threads;
    double work = (double)d->steps * d->batch * fr_gates(d->cell) * d->hidden
                * (double)(d->input + d->hidden);
    double cap = work / FR_MIN_WORK;
    return cap < 1 ? 1 : (cap < nt ? (int)cap : nt);
}

static int fr_threads(const fr_dims *d)
{
    int nt = fr_useful_threads(d);
    return nt < fr_nchunks(d) ? nt : fr_nchunks(d);
}
/* Whether the unit-split path may take this call, whatever the thread count: inference
   of a batch too small to cut into chunks (one chunk), hidden units that split into
   slices of 32 for at least 2 threads, and enough work per step that a barrier per
   step pays (FR_SPLIT_MIN_STEP: multiply-adds of a step; at 16384 an RNN of hidden 128
   and an LSTM or GRU of hidden 64 qualify: halves of their W_hh fit each core's L1). */
#define FR_SPLIT_MIN_STEP 16384.0
static int fr_split_candidate(const fr_dims *d)
{
    return fr_split_shape(d, fr_gates(d->cell), fr_nchunks(d) == 1, FR_SPLIT_MIN_STEP);
}
/* Threads for the unit-split path (0: not taken) */
static int fr_split_threads(const fr_dims *d) { return fr_split_team(d, fr_split_candidate(d)); }
/* One product per step, [x_t, h] [W_ih, W_hh]^T, for LSTM and RNN. Not for GRU (its n
   gate needs the two halves apart), and not for split candidates: the split path
   projects the inputs of a block of steps apart from h W_hh^T, and the chunk path then
   does the same so that results never depend on the thread count. */
static int fr_fused(const fr_dims *d) { return d->cell != FR_GRU && !fr_split_candidate(d); }

static int fr_xblock(const fr_dims *d) { return d->steps < FR_XBLOCK ? d->steps : FR_XBLOCK; }

/* a * b * c ... in size_t, 0 on overflow */
static size_t fr_mul(size_t a, size_t b) { return (b && a > (size_t)-1 / b) ? 0 : a * b; }

/* Workspace regions start on 64-byte boundaries: numpy hands large buffers over at
   16 bytes past a page, and the kernel's 64-byte loads of packed weights that straddle
   two cache lines cost up to a third of a batch-1 step (L2-bound). */
#define FR_ALIGN 16                                 /* elements: 64 bytes of float */
static size_t fr_round(size_t n) { return (n + FR_ALIGN - 1) / FR_ALIGN * FR_ALIGN; }

/* ---- The packed-weight cache (float32 inference with the kernel) ----
   Packing W_hh and W_ih into the kernel's panels costs about two steps of a batch-1
   call (reading and writing every weight once). A caller that runs the same weights
   again may hand over a cache (fr_forward_cached_f32): a key, a copy of the weights as
   they were when last packed, and the panels. Each call compares the weights with the
   copy, bit for bit (memcmp: one read of each, no writes), and repacks what differs:
   a weight changed in place (an optimizer step), a new array or a changed thread count
   can never be served stale panels, and identical bits give identical panels.
   Layout (floats, from the first 64-byte boundary): key (FR_WC_KEY), copy of w_ih
   (GH x I), copy of w_hh (GH x H), panels (fr_wc_panels). */
#define FR_WC_KEY 16
#define FR_WC_MAGIC 0x31435746
enum { FR_WC_CHUNK = 1, FR_WC_SPLIT = 2 };
static size_t fr_wc_panels(const fr_dims *d)
{
    const int GH = fr_gates(d->cell) * d->hidden, H = d->hidden, I = d->input;
    const size_t split = (size_t)GH * ((size_t)H + I);   /* slices of whole panels */
    const size_t fused = fr_packed_size(GH, I + H);
    const size_t apart = fr_packed_size(GH, H) + fr_packed_size(GH, I);
    size_t n = split > fused ? split : fused;
    return n > apart ? n : apart;
}

size_t fr_weight_cache_size(const fr_dims *d)
{
    if (!fr_dims_ok(d)) return 0;
    const size_t GH = (size_t)fr_gates(d->cell) * d->hidden;
    return FR_ALIGN + FR_WC_KEY + fr_round(fr_mul(GH, (size_t)d->input))
         + fr_round(fr_mul(GH, (size_t)d->hidden)) + fr_round(fr_wc_panels(d));
}

static size_t fr_forward_per_thread(const fr_dims *d)
{
    size_t c = (size_t)fr_chunk(d), K = (size_t)fr_xblock(d), H = (size_t)d->hidden;
    size_t GH = (size_t)fr_gates(d->cell) * H;
    return fr_round(fr_mul(fr_mul(K, c), (size_t)d->input + GH) + c * GH + 2 * c * H
                    + c * ((size_t)d->input + H));
}

/* packed float32 weights used by the kernel: W_hh then W_ih (see kernels.h) */
static size_t fr_packed_weights(const fr_dims *d)
{
    const int GH = fr_gates(d->cell) * d->hidden;
    return fr_packed_size(GH, d->hidden) + fr_packed_size(GH, d->input)
         + fr_packed_size(d->hidden, GH) + fr_packed_size(d->input, GH);
}

static int fr_use_kernel(void) { return fr_avx512; }

/* per thread of the unit-split path with nt threads: a, the two bias slices, the cell
   slice, gathered inputs and their projection for a block of steps */
static size_t fr_split_per_thread(const fr_dims *d, int nt)
{
    const size_t B = (size_t)d->batch, hs = (size_t)(d->hidden / nt);
    const size_t GS = (size_t)fr_gates(d->cell) * hs, XB = (size_t)fr_xblock(d);
    return fr_round(B * GS + 2 * GS + B * hs + XB * B * ((size_t)d->input + GS));
}

size_t fr_forward_workspace(const fr_dims *d)
{
    if (!fr_dims_ok(d)) return 0;
    const int nsplit = fr_split_threads(d);
    size_t per = fr_mul(fr_forward_per_thread(d), (size_t)fr_threads(d));
    if (nsplit) {       /* shared (2, B, H) state rows, then nsplit per-thread areas */
        size_t split = fr_mul(fr_split_per_thread(d, nsplit), (size_t)nsplit)
                     + fr_round(2 * (size_t)d->batch * d->hidden);
        per = split > per ? split : per;
    }
    return per ? FR_ALIGN + per + fr_packed_weights(d) : 0;
}

static size_t fr_dg_size(const fr_dims *d)
{
    size_t GH = (size_t)fr_gates(d->cell) * d->hidden;
    return fr_mul(fr_mul((size_t)d->steps, (size_t)d->batch), GH);
}
/* dG's share of the backward workspace: none for LSTM (written over the stored gates),
   GRU's two (hidden and input side), RNN's one */
static size_t fr_dg_ws(const fr_dims *d)
{
    return d->cell == FR_LSTM ? 0 : fr_round(fr_dg_size(d)) * (d->cell == FR_GRU ? 2 : 1);
}

/* The weight gradients sum over all T*B rows. They are cut into fr_kseg segments of
   rows, fixed by the problem alone (never by the thread count, so results stay bitwise
   the same for any number of threads); each segment's partial dW_hh and dW_ih is one
   item of work, and the partials are then added in segment order. Cut by gate rows
   instead, every thread re-read all of h_prev from memory for a thinner product
   (M-size RNN: 2.0 ms of work on 2 threads for dW_hh against 1.6 ms on one). */
#define FR_KSEG_MAX 8
#define FR_KSEG_ROWS 1024      /* rows per segment at least */
static int fr_kseg(const fr_dims *d)
{
    const long rows = (long)d->steps * d->batch;
    long n = rows / FR_KSEG_ROWS;
    return n < 1 ? 1 : (n > FR_KSEG_MAX ? FR_KSEG_MAX : (int)n);
}

/* Each segment's partial dW (GH x n) may further be cut by gate rows into blocks of
   fr_wblock rows (a multiple of 32, so that fastrnn's kernel, which tiles C in blocks
   of 32 rows, computes every element with exactly the same sums as in one call; BLAS
   gets the same cut at any thread count). Cut only when there are few segments: a
   small problem (1348x8x8: 256 rows, one segment) otherwise left its whole dW_hh to one
   thread while the other idled. Enough blocks for 6 items (2 or 3 threads balance),
   each of FR_WBLOCK_WORK multiply-adds at least. Fixed by the problem alone. */
#define FR_WITEMS 6
#define FR_WBLOCK_WORK 2e6
static int fr_wblock(const fr_dims *d, int n)
{
    const int GH = fr_gates(d->cell) * d->hidden, nseg = fr_kseg(d);
    const long rows = (long)d->steps * d->batch;
    const double seg_work = (double)rows / nseg * GH * n;
    int nb = (FR_WITEMS + nseg - 1) / nseg;
    while (nb > 1 && seg_work / nb < FR_WBLOCK_WORK) nb--;
    int blk = (GH + nb - 1) / nb;
    blk = (blk + 31) / 32 * 32;
    return blk < GH ? blk : GH;
}

/* With few inputs (I <= FR_STEP_IH_MAX) dW_ih is summed during the recurrence, step by
   step, while each step's dG rows are still in cache: as a product of its own after the
   loop it streamed all of dG again for 8 multiply-adds per element (300x100x8: 1.1 ms
   of 13 on one thread, at a quarter of the kernel's speed). Each chunk keeps its partial
   dW_ih^T (I x GH), added in chunk order afterwards: fixed by the problem alone. At
   I = 16 (the S case) the product after the loop was still as fast. */
#define FR_STEP_IH_MAX 8
static int fr_step_ih(const fr_dims *d) { return d->input <= FR_STEP_IH_MAX; }

size_t fr_backward_workspace(const fr_dims *d)
{
    if (!fr_dims_ok(d)) return 0;
    size_t GH = (size_t)fr_gates(d->cell) * d->hidden;
    size_t dg = fr_dg_size(d);
    if (!dg) return 0;
    size_t nt = (size_t)fr_useful_threads(d);
    const size_t rows = fr_mul((size_t)d->steps, (size_t)d->batch);
    const size_t xrows = fr_mul(rows, (size_t)d->input);
    if (!xrows) return 0;
    const int gru = d->cell == FR_GRU;
    /* dG in loop order (permuted within chunks); GRU's input-side dG apart, in x's row
       order. LSTM, RNN: x gathered in loop order (dW_ih after the loop), per thread a
       block of dX rows in loop order, and the map of loop rows to x's rows (the blocks
       are scattered back) */
    return FR_ALIGN + fr_dg_ws(d)
         + fr_round((size_t)fr_nchunks(d) * 2 * GH)
         + nt * fr_round((size_t)2 * fr_chunk(d) * d->hidden) + fr_packed_weights(d)
         + fr_round(fr_mul((size_t)fr_kseg(d) * GH, (size_t)d->hidden + d->input))
         + (fr_step_ih(d) ? fr_round((size_t)fr_nchunks(d) * GH * d->input)
                          : gru ? 0 : fr_round(xrows))
         + (gru ? 0 : nt * fr_round((size_t)FR_GEMM_BLOCK_ROWS * d->input) + fr_round(rows));
}


/* Whether fr_forward_f32 runs each step of d as ONE product [x_t, h] [W_ih, W_hh]^T
   (else the input projection and h W_hh^T apart): the stream (stream.c) follows the
   same choice to reproduce forward's bits. */
int fr_forward_fuses(const fr_dims *d)
{
    return fr_dims_ok(d) && fr_use_kernel() && fr_fused(d);
}

int fr_splits_as_one_chunk(const fr_dims *d)
{
    return fr_dims_ok(d) && fr_use_kernel()
        && fr_split_team(d, fr_split_shape(d, fr_gates(d->cell), 1, FR_SPLIT_MIN_STEP)) > 0;
}
#endif /* FR_IS_FLOAT */

/* the first 64-byte boundary in a workspace (the sizes above leave room for it) */
static real *FR(aligned)(real *ws)
{
    const uintptr_t a = (uintptr_t)ws, r = (a + 63) & ~(uintptr_t)63;
    return (real *)(void *)((char *)ws + (r - a));
}

/* Row-major C (m x n) = alpha op(A) op(B) + beta C through column-major BLAS:
   compute C^T = op(B)^T op(A)^T, i.e. swap the operands (as sklearn's _cython_blas). */
static void FR(gemm_rm)(gemm_t gemm, int ta, int tb, int m, int n, int k, real alpha,
                        const real *A, int lda, const real *B, int ldb, real beta,
                        real *C, int ldc)
{
    char cta = ta ? 'T' : 'N', ctb = tb ? 'T' : 'N';
    gemm(&ctb, &cta, &n, &m, &k, &alpha, (real *)B, &ldb, (real *)A, &lda, &beta, C, &ldc);
}

/* C (m x n) (+)= A (m x k) op(W), op(W) = W^T with W (n x k) when wt, else W (k x n):
   fastrnn's packed kernel when `packed` is given (float32 on AVX-512), else BLAS. */
static void FR(mul)(gemm_t gemm, const float *packed, int wt, int m, int n, int k,
                    const real *A, int lda, const real *W, int accumulate, real *C, int ldc)
{
#if FR_IS_FLOAT
    if (packed) { fr_gemm_packed(m, n, k, A, lda, packed, accumulate, C, ldc); return; }
#else
    (void)packed;
#endif
    FR(gemm_rm)(gemm, 0, wt, m, n, k, 1, A, lda, W, wt ? k : n, accumulate ? 1 : 0, C, ldc);
}
#define FR_MUL_WT(gemm, pk, m, n, k, A, lda, W, acc, C, ldc) \
    FR(mul)(gemm, pk, 1, m, n, k, A, lda, W, acc, C, ldc)
#define FR_MUL_W(gemm, pk, m, n, k, A, lda, W, acc, C, ldc) \
    FR(mul)(gemm, pk, 0, m, n, k, A, lda, W, acc, C, ldc)

/* C (m x n) = A^T B with A (K x m), B (K x n): the weight gradients. fastrnn's kernel
   for float32 on AVX-512 (no packing of the long inner dimension), else BLAS. */
static void FR(mul_tn)(gemm_t gemm, int m, int n, int K, const real *A, int lda,
                       const real *B, int ldb, real *C, int ldc)
{
#if FR_IS_FLOAT
    if (fr_use_kernel()) { fr_gemm_tn(m, n, K, A, lda, B, ldb, 0, C, ldc); return; }
#endif
    FR(gemm_rm)(gemm, 1, 0, m, n, K, 1, A, lda, B, ldb, 0, C, ldc);
}

/* Packs the weights for the kernel into ws (float32 with the kernel available only);
   sets the four panels' addresses or leaves them NULL (then BLAS is used). With
   pack == 0 only the addresses are set (the panels are already there: the cache). */
static void FR(pack_weights)(const fr_dims *d, real *ws, const real *w_ih, const real *w_hh,
                             int for_backward, int pack, const float **pk_hh,
                             const float **pk_ih)
{
    *pk_hh = NULL;
    *pk_ih = NULL;
#if FR_IS_FLOAT
    if (!fr_use_kernel()) return;
    const int GH = fr_gates(d->cell) * d->hidden, H = d->hidden, I = d->input;
    float *p = ws;
    if (!for_backward && fr_fused(d)) {
        /* one product per step: [x_t, h_{t-1}] [W_ih, W_hh]^T (GRU cannot: its n gate
           needs the two halves apart) */
        if (pack) fr_pack_wt2(p, w_ih, I, I, w_hh, H, H, GH);
        *pk_hh = p;
        *pk_ih = NULL;
    } else if (!for_backward) {
        if (pack) {
            fr_pack_wt(p, w_hh, GH, H, H);                 /* a = h W_hh^T  */
            fr_pack_wt(p + fr_packed_size(GH, H), w_ih, GH, I, I);   /* xp = x W_ih^T */
        }
        *pk_hh = p;
        *pk_ih = p + fr_packed_size(GH, H);
    } else {
        float *q = p + fr_packed_size(GH, H) + fr_packed_size(GH, I);
        if (pack) {
            fr_pack_w(q, w_hh, GH, H, H);                  /* dh += dG W_hh */
            fr_pack_w(q + fr_packed_size(H, GH), w_ih, GH, I, I);    /* dx = dG W_ih  */
        }
        *pk_hh = q;
        *pk_ih = q + fr_packed_size(H, GH);
    }
#else
    (void)d; (void)ws; (void)w_ih; (void)w_hh; (void)for_backward; (void)pack;
#endif
}

/* pack_weights cut into items of one 32-column panel each, so that the threads of a
   call share the packing (serial, it took 15-30 us of a 0.5 ms small training call):
   fr_pack_items panels in all, FR(pack_item) packs panel q into the layout that
   pack_weights(..., pack = 1) writes, bit for bit (the same copies, panel by panel).
   Call pack_weights with pack = 0 first for the addresses. */
static int FR(pack_items)(const fr_dims *d, int for_backward)
{
    const int GH = fr_gates(d->cell) * d->hidden, H = d->hidden, I = d->input;
    const int pg = (GH + FR_NR - 1) / FR_NR;
    if (!for_backward) return fr_fused(d) ? pg : 2 * pg;
    return (H + FR_NR - 1) / FR_NR + (I + FR_NR - 1) / FR_NR;
}
static void FR(pack_item)(const fr_dims *d, const float *pk_hh, const float *pk_ih,
                          const real *w_ih, const real *w_hh, int for_backward, int q)
{
#if FR_IS_FLOAT
    const int GH = fr_gates(d->cell) * d->hidden, H = d->hidden, I = d->input;
    const int pg = (GH + FR_NR - 1) / FR_NR;
    float *ph = (float *)pk_hh, *pi = (float *)pk_ih;
    if (!for_backward) {
        const int ih = q >= pg, p = ih ? q - pg : q;
        const int nc = GH - p * FR_NR < FR_NR ? GH - p * FR_NR : FR_NR;
        const size_t r0 = (size_t)p * FR_NR;
        if (fr_fused(d))
            fr_pack_wt2(ph + r0 * (I + H), w_ih + r0 * I, I, I, w_hh + r0 * H, H, H, nc);
        else if (!ih)
            fr_pack_wt(ph + r0 * H, w_hh + r0 * H, nc, H, H);
        else
            fr_pack_wt(pi + r0 * I, w_ih + r0 * I, nc, I, I);
    } else {
        const int ph_n = (H + FR_NR - 1) / FR_NR, ih = q >= ph_n, p = ih ? q - ph_n : q;
        const int n = ih ? I : H, nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        const size_t c0 = (size_t)p * FR_NR;
        if (!ih) fr_pack_w(ph + c0 * GH, w_hh + c0, GH, nc, H);
        else     fr_pack_w(pi + c0 * GH, w_ih + c0, GH, nc, I);
    }
#else
    (void)d; (void)pk_hh; (void)pk_ih; (void)w_ih; (void)w_hh; (void)for_backward; (void)q;
#endif
}

/* acc[0:n) += x[0:n); an AVX-512 clone where the CPU has it (bias sums, d_out) */
FR_CLONES static void FR(add_to)(real *restrict acc, const real *restrict x, int n)
{
    for (int k = 0; k < n; k++) acc[k] += x[k];
}

/* accT (I x GH) += sum over rows r < n of x_r^T g_r, x_r = x + xrow[r] * I (I),
   g_r = g[r] (GH): each element gets its rows' products added in row order, four rows
   per pass over acc (one load and store of acc per four products) */
FR_CLONES static void FR(add_outer)(real *restrict acc, const real *x, const size_t *xrow,
                                    real *const *g, int n, int I, int GH)
{
#if FR_IS_FLOAT
    if (fr_add_outer_f32(acc, x, xrow, g, n, I, GH)) return;   /* AVX-512 (kernels.h) */
#endif
    int r = 0;
    for (; r + 4 <= n; r += 4) {
        const real *x0 = x + xrow[r] * I, *x1 = x + xrow[r + 1] * I;
        const real *x2 = x + xrow[r + 2] * I, *x3 = x + xrow[r + 3] * I;
        const real *restrict g0 = g[r], *restrict g1 = g[r + 1];
        const real *restrict g2 = g[r + 2], *restrict g3 = g[r + 3];
        for (int i = 0; i < I; i++) {
            const real a0 = x0[i], a1 = x1[i], a2 = x2[i], a3 = x3[i];
            real *restrict ai = acc + (size_t)i * GH;
            for (int k = 0; k < GH; k++) {
                real v = ai[k];
                v += a0 * g0[k];
                v += a1 * g1[k];
                v += a2 * g2[k];
                v += a3 * g3[k];
                ai[k] = v;
            }
        }
    }
    for (; r < n; r++) {
        const real *xr = x + xrow[r] * I, *restrict gr = g[r];
        for (int i = 0; i < I; i++) {
            const real a = xr[i];
            real *restrict ai = acc + (size_t)i * GH;
            for (int k = 0; k < GH; k++) ai[k] += a * gr[k];
        }
    }
}

/* rows of H values between buffers of different row strides */
static void FR(copy_rows)(real *dst, int ldd, const real *src, int lds, int nb, int H)
{
    if (ldd == H && lds == H) { memcpy(dst, src, sizeof(real) * nb * H); return; }
    for (int r = 0; r < nb; r++)
        memcpy(dst + (size_t)r * ldd, src + (size_t)r * lds, sizeof(real) * H);
}

/* The inputs of steps [t0, t0 + kb) of nb samples into xg, step-major with lds rows per
   step (nb: packed; B: the loop order of a whole batch): row (s, r) holds sample
   b0 + perm[r] (b0 + r without perm) at its step t0 + s, or zeros past its length
   len[r]. */
static void FR(gather_inputs)(const fr_dims *d, const real *x, int t0, int kb, int b0,
                              int nb, const int *perm, const int *len, real *xg, int lds)
{
    const int I = d->input;
    for (int s = 0; s < kb; s++)
        for (int r = 0; r < nb; r++) {
            const int b = b0 + (perm ? perm[r] : r), t = t0 + s;
            real *dst = xg + ((size_t)s * lds + r) * I;
            if (t < len[r])
                memcpy(dst, x + fr_row(d, fr_time_index(d, t, len[r]), b) * I, sizeof(real) * I);
            else
                memset(dst, 0, sizeof(real) * I);
        }
}

/* Runs samples [j*c, j*c + nb) through all their steps. w: this thread's workspace.
   Inside the chunk the samples are ordered by length, longest first (perm), so at every
   step the samples still running are rows [0, nact): the products and the cell work on
   them alone. The cache rows (h_all, c_all, store: loop order) keep that order too, and
   backward uses the same permutation.
   fused (LSTM/RNN with the kernel): each step is ONE product [x_t, h] W_cat^T, with h
   kept in the right-hand columns of the row buffer xh; otherwise the input projection of
   a block of steps is one product and h W_hh^T another per step. */
static void FR(forward_chunk)(const fr_dims *d, int j, real *w, real *out, real *h_n,
                              real *c_n, real *h_all, real *c_all, real *store,
                              const real *x, const int *lengths, const real *h0,
                              const real *c0, const real *w_ih, const real *w_hh,
                              const real *b_ih, const real *b_hh, gemm_t gemm,
                              const float *pk_hh, const float *pk_ih)
{
    const int B = d->batch, T = d->steps, I = d->input, H = d->hidden, cell = d->cell;
    const int c = fr_chunk(d), GH = fr_gates(cell) * H, S = fr_store_width(cell, H);
    const int K = fr_xblock(d), b0 = j * c, nb = B - b0 < c ? B - b0 : c;
    const int lstm = cell == FR_LSTM;
    const int fused = pk_hh != NULL && pk_ih == NULL;
    real *xg = w;                               /* (K*nb, I)  gathered inputs, loop order */
    real *xp = xg + (size_t)K * c * I;          /* (K*nb, GH) their projections */
    real *a = xp + (size_t)K * c * GH;          /* (nb, GH)   recurrent product */
    real *hbuf = a + (size_t)c * GH;            /* (nb, H)    running state */
    real *cs = hbuf + (size_t)c * H;            /* (nb, H)    running cell (LSTM) */
    real *xh = cs + (size_t)c * H;              /* (nb, I+H)  [x_t, h] when fused */
    const int ldh = fused ? I + H : H;          /* row stride of the running state */
    real *h = fused ? xh + I : hbuf;
    int perm[FR_MAX_CHUNK], len[FR_MAX_CHUNK] = {0};
    fr_sort_chunk(lengths, b0, nb, perm, len);
    const int Tc = len[0];

    for (int r = 0; r < nb; r++) {
        memcpy(h + (size_t)r * ldh, h0 + (size_t)(b0 + perm[r]) * H, sizeof(real) * H);
        if (lstm) memcpy(cs + (size_t)r * H, c0 + (size_t)(b0 + perm[r]) * H, sizeof(real) * H);
    }
    if (h_all) FR(copy_rows)(h_all + (size_t)b0 * H, H, h, ldh, nb, H);
    if (c_all) memcpy(c_all + (size_t)b0 * H, cs, sizeof(real) * nb * H);

    int nact = nb;                              /* rows [0, nact) still running */
    for (int t0 = 0; t0 < Tc; t0 += K) {
        const int kb = Tc - t0 < K ? Tc - t0 : K;
        if (!fused) {
            FR(gather_inputs)(d, x, t0, kb, b0, nb, perm, len, xg, nb);
            FR_MUL_WT(gemm, pk_ih, kb * nb, GH, I, xg, I, w_ih, 0, xp, GH);
        }

        for (int s = 0; s < kb; s++) {
            const int t = t0 + s;
            while (nact > 0 && len[nact - 1] <= t) nact--;
            if (fused) {
                for (int r = 0; r < nact; r++)
                    memcpy(xh + (size_t)r * ldh,
                           x + fr_row(d, fr_time_index(d, t, len[r]), b0 + perm[r]) * I,
                           sizeof(real) * I);
                FR_MUL_WT(gemm, pk_hh, nact, GH, I + H, xh, ldh, NULL, 0, a, GH);
            } else {
#if FR_IS_FLOAT
                if (pk_hh)      /* same bits; panels in alternating order (L1 reuse) */
                    fr_gemm_packed_alt(nact, GH, H, h, H, pk_hh, a, GH, t & 1);
                else
#endif
                FR_MUL_WT(gemm, pk_hh, nact, GH, H, h, H, w_hh, 0, a, GH);
            }
            real *st = store ? store + ((size_t)t * B + b0) * S : NULL;
            const real *xps = fused ? NULL : xp + (size_t)s * nb * GH;
            /* training: the running rows' h and c go into h_all / c_all from the cell */
            real *hk = h_all ? h_all + ((size_t)(t + 1) * B + b0) * H : NULL;
            real *ck = c_all ? c_all + ((size_t)(t + 1) * B + b0) * H : NULL;
            switch (cell) {
            case FR_LSTM:
                FR(lstm_rows_forward)(nact, H, xps, a, b_ih, b_hh, h, ldh, cs, st, hk, ck);
                break;
            case FR_GRU:
                FR(gru_rows_forward)(nact, H, xps, a, b_ih, b_hh, h, ldh, st, hk);
                break;
            default:
                FR(rnn_rows_forward)(nact, H, cell == FR_RNN_RELU, xps, a, b_ih, b_hh, h, ldh,
                                     hk);
            }
            if (out)
                for (int r = 0; r < nact; r++)
                    memcpy(out + fr_row(d, fr_time_index(d, t, len[r]), b0 + perm[r]) * d->ld,
                           h + (size_t)r * ldh, sizeof(real) * H);
            if (hk && nact < nb)    /* carried rows */
                FR(copy_rows)(hk + (size_t)nact * H, H, h + (size_t)nact * ldh, ldh, nb - nact, H);
            if (ck && nact < nb)
                memcpy(ck + (size_t)nact * H, cs + (size_t)nact * H, sizeof(real) * (nb - nact) * H);
        }
    }
    /* steps no sample of this chunk takes: state carried (kept finite for the dW_hh GEMM) */
    for (int t = Tc; t < T; t++) {
        if (h_all) FR(copy_rows)(h_all + ((size_t)(t + 1) * B + b0) * H, H, h, ldh, nb, H);
        if (c_all) memcpy(c_all + ((size_t)(t + 1) * B + b0) * H, cs, sizeof(real) * nb * H);
    }
    for (int r = 0; r < nb && out; r++)
        for (int tt = len[r]; tt < T; tt++)
            memset(out + fr_row(d, tt, b0 + perm[r]) * d->ld, 0, sizeof(real) * H);
    for (int r = 0; r < nb; r++) {
        memcpy(h_n + (size_t)(b0 + perm[r]) * H, h + (size_t)r * ldh, sizeof(real) * H);
        if (lstm) memcpy(c_n + (size_t)(b0 + perm[r]) * H, cs + (size_t)r * H, sizeof(real) * H);
    }
}

#if FR_IS_FLOAT
/* Inference of a tiny batch (one chunk) with several threads: the hidden units are cut
   into one slice per thread instead of the batch. Each thread packs the rows of W_ih and
   W_hh that feed its units (they stay in its own cache), projects the inputs of a block
   of steps onto its gate columns in one product, and per step computes its gate columns
   of h W_hh^T and updates its units; the full h for the next step is assembled in a
   double-buffered row, so one barrier per step suffices (fr_step_barrier). Per step
   only the recurrent weights stream from the thread's cache, the panels in alternating
   order (fr_gemm_packed_alt). Every cell: a unit's update needs only its own gates (and,
   for GRU, its own previous value).
   packed: the nt slices (in ws, or in the weight cache); copy_ih / copy_hh: the cache's
   copies of the weights (NULL: no cache, always pack); force: repack whatever the copies
   say (the cache held another layout). Each thread checks and packs only its own rows. */
static void FR(forward_split)(const fr_dims *d, int nt, real *out, real *h_n, real *c_n,
                              const real *x, const int *lengths, const real *h0,
                              const real *c0, const real *w_ih, const real *w_hh,
                              const real *b_ih, const real *b_hh, real *ws, real *packed,
                              real *copy_ih, real *copy_hh, int force)
{
    const int B = d->batch, T = d->steps, I = d->input, H = d->hidden, cell = d->cell;
    const int G = fr_gates(cell), hs = H / nt, GS = G * hs, lstm = cell == FR_LSTM;
    const int gru = cell == FR_GRU;
    const int XB = fr_xblock(d);
    const size_t per = fr_split_per_thread(d, nt);
    real *hbuf = ws + fr_packed_weights(d);              /* (2, B, H) shared */
    real *wthreads = hbuf + fr_round(2 * (size_t)B * H);
    fr_step_flag flags[nt];
    fr_step_barrier bar;
    fr_step_barrier_init(&bar, flags, nt);
    int Tmax = 0;
    for (int b = 0; b < B; b++) Tmax = lengths[b] > Tmax ? lengths[b] : Tmax;
#pragma omp parallel num_threads(nt)
    {
        FR_FTZ_ON();
        FR_NOTE_TEAM();
        /* slices tid, tid + team, ...: one each unless OpenMP gave a smaller team
           (OMP_DYNAMIC, a thread limit); the barrier counts the team */
        const int tid = FR_THREAD_NUM(), team = FR_TEAM_SIZE();
        int phase = 0;
        for (int sl = tid; sl < nt; sl += team) {
            const int u0 = sl * hs;
            real *pk_hh = packed + (size_t)sl * GS * (H + I);
            real *pk_ih = pk_hh + (size_t)GS * H;
            real *a = wthreads + per * (size_t)sl;       /* (B, GS) */
            real *bi = a + (size_t)B * GS, *bh = bi + GS;
            real *cst = bh + GS;                         /* (B, hs) */
            const int changed = copy_hh &&
                fr_wc_sync_slice(copy_ih, copy_hh, w_ih, w_hh, G, H, I, u0, hs);
            for (int g = 0; g < G; g++) {                /* gate g's rows u0..u0+hs */
                if (!copy_hh || changed || force) {
                    fr_pack_wt(pk_hh + (size_t)g * hs * H, w_hh + (size_t)(g * H + u0) * H, hs, H, H);
                    fr_pack_wt(pk_ih + (size_t)g * hs * I, w_ih + (size_t)(g * H + u0) * I, hs, I, I);
                }
                memcpy(bi + g * hs, b_ih + g * H + u0, sizeof(real) * hs);
                memcpy(bh + g * hs, b_hh + g * H + u0, sizeof(real) * hs);
            }
            for (int b = 0; b < B; b++) {
                memcpy(hbuf + (size_t)b * H + u0, h0 + (size_t)b * H + u0, sizeof(real) * hs);
                if (lstm) memcpy(cst + (size_t)b * hs, c0 + (size_t)b * H + u0, sizeof(real) * hs);
            }
        }
        fr_step_barrier_wait(&bar, team, tid, &phase);
        for (int t0 = 0; t0 < Tmax; t0 += XB) {
            const int kb = Tmax - t0 < XB ? Tmax - t0 : XB;
            for (int sl = tid; sl < nt; sl += team) {
                real *a = wthreads + per * (size_t)sl;
                real *xg = a + (size_t)B * GS + 2 * GS + (size_t)B * hs;   /* (XB*B, I) */
                real *xp = xg + (size_t)XB * B * I;                        /* (XB*B, GS) */
                const real *pk_ih = packed + (size_t)sl * GS * (H + I) + (size_t)GS * H;
                FR(gather_inputs)(d, x, t0, kb, 0, B, NULL, lengths, xg, B);
                fr_gemm_packed(kb * B, GS, I, xg, I, pk_ih, 0, xp, GS);
            }
            for (int s = 0; s < kb; s++) {
                const int t = t0 + s;
                real *cur = hbuf + (size_t)(t & 1) * B * H, *nxt = hbuf + (size_t)((t + 1) & 1) * B * H;
                for (int sl = tid; sl < nt; sl += team) {
                    const int u0 = sl * hs;
                    const real *pk_hh = packed + (size_t)sl * GS * (H + I);
                    real *a = wthreads + per * (size_t)sl;
                    real *bi = a + (size_t)B * GS, *bh = bi + GS, *cst = bh + GS;
                    const real *xp = cst + (size_t)B * hs + (size_t)XB * B * I;
                    fr_gemm_packed_alt(B, GS, H, cur, H, pk_hh, a, GS, t & 1);
                    for (int b = 0; b < B; b++) {
                        const int len = lengths[b];
                        real *hn = nxt + (size_t)b * H + u0;
                        if (t >= len) {                  /* carried */
                            memcpy(hn, cur + (size_t)b * H + u0, sizeof(real) * hs);
                            continue;
                        }
                        real *ab = a + (size_t)b * GS;
                        const real *xpb = xp + ((size_t)s * B + b) * GS;
                        if (lstm)
                            FR(lstm_rows_forward)(1, hs, xpb, ab, bi, bh, hn, H, cst + (size_t)b * hs, NULL,
                                                  NULL, NULL);
                        else if (gru)    /* h_{t-1} read from cur, h_t written to nxt */
                            fr_gru_row_forward_from_avx512(hs, xpb, ab, bi, bh,
                                                           cur + (size_t)b * H + u0, hn);
                        else
                            FR(rnn_rows_forward)(1, hs, cell == FR_RNN_RELU, xpb, ab, bi, bh, hn, H, NULL);
                        if (out)
                            memcpy(out + fr_row(d, fr_time_index(d, t, len), b) * d->ld + u0, hn,
                                   sizeof(real) * hs);
                    }
                }
                fr_step_barrier_wait(&bar, team, tid, &phase);
            }
        }
        for (int sl = tid; sl < nt; sl += team) {
            const int u0 = sl * hs;
            const real *cst = wthreads + per * (size_t)sl + (size_t)B * GS + 2 * GS;
            for (int b = 0; b < B; b++) {
                memcpy(h_n + (size_t)b * H + u0, hbuf + (size_t)(Tmax & 1) * B * H + (size_t)b * H + u0,
                       sizeof(real) * hs);
                if (lstm) memcpy(c_n + (size_t)b * H + u0, cst + (size_t)b * hs, sizeof(real) * hs);
                for (int tt = lengths[b]; tt < T && out; tt++)
                    memset(out + fr_row(d, tt, b) * d->ld + u0, 0, sizeof(real) * hs);
            }
        }
        FR_FTZ_OFF();
    }
}
#endif

/* fr_forward, with the packed-weight cache of fr_forward_cached_f32 (NULL: none; only
   float32 inference on the kernel uses it) */
static int FR(forward_impl)(const fr_dims *d, real *out, real *h_n, real *c_n,
                            real *h_all, real *c_all, real *store,
                            const real *x, const int *lengths, const real *h0, const real *c0,
                            const real *w_ih, const real *w_hh, const real *b_ih,
                            const real *b_hh, real *ws, real *cache, gemm_t gemm)
{
    if (!fr_dims_ok(d) || !fr_lengths_ok(d, lengths)) return FR_EBADDIMS;
    ws = FR(aligned)(ws);
    const int nchunks = fr_nchunks(d), nt = fr_threads(d);
    const size_t per = fr_forward_per_thread(d);
    real *packed = ws;
    int pack = 1;
#if FR_IS_FLOAT
    real *copy_ih = NULL, *copy_hh = NULL;
    const int cached = cache != NULL && !h_all && fr_use_kernel();
    if (cached) {
        const size_t GH = (size_t)fr_gates(d->cell) * d->hidden;
        cache = FR(aligned)(cache);
        copy_ih = cache + FR_WC_KEY;
        copy_hh = copy_ih + fr_round(GH * (size_t)d->input);
        packed = copy_hh + fr_round(GH * (size_t)d->hidden);
    }
    const int nsplit = fr_split_threads(d);
    if (nsplit && !h_all && fr_use_kernel() && !getenv("FASTRNN_NO_SPLIT")) {
        const int force = cached ? fr_wc_claim(cache, FR_WC_MAGIC, d, FR_WC_SPLIT, nsplit, 0) : 1;
        FR(forward_split)(d, nsplit, out, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih,
                          b_hh, ws, packed, copy_ih, copy_hh, force);
        return FR_OK;
    }
    if (cached) {
        const size_t GH = (size_t)fr_gates(d->cell) * d->hidden;
        const int force = fr_wc_claim(cache, FR_WC_MAGIC, d, FR_WC_CHUNK, 0, fr_fused(d));
        pack = fr_wc_sync_rows(copy_ih, copy_hh, w_ih, w_hh, 0, GH, d->input, d->hidden)
             | force;
    }
#else
    (void)cache;
#endif
    const float *pk_hh, *pk_ih;
    /* with several threads they pack the panels together, in the region */
    FR(pack_weights)(d, packed, w_ih, w_hh, 0, pack && nt < 2, &pk_hh, &pk_ih);
    const int npk = pack && nt > 1 && pk_hh != NULL ? FR(pack_items)(d, 0) : 0;
    real *wthreads = ws + fr_packed_weights(d);
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        FR_FTZ_ON();
        FR_NOTE_TEAM();
        real *w = wthreads + per * (size_t)FR_THREAD_NUM();
        if (npk) {
#pragma omp for schedule(static)
            for (int q = 0; q < npk; q++)
                FR(pack_item)(d, pk_hh, pk_ih, w_ih, w_hh, 0, q);
        }
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < nchunks; j++)
            FR(forward_chunk)(d, j, w, out, h_n, c_n, h_all, c_all, store, x, lengths,
                              h0, c0, w_ih, w_hh, b_ih, b_hh, gemm, pk_hh, pk_ih);
        FR_FTZ_OFF();
    }
    return FR_OK;
}

int FR(fr_forward)(const fr_dims *d, real *out, real *h_n, real *c_n,
                   real *h_all, real *c_all, real *store,
                   const real *x, const int *lengths, const real *h0, const real *c0,
                   const real *w_ih, const real *w_hh, const real *b_ih, const real *b_hh,
                   real *ws, gemm_t gemm)
{
    return FR(forward_impl)(d, out, h_n, c_n, h_all, c_all, store, x, lengths, h0, c0,
                            w_ih, w_hh, b_ih, b_hh, ws, NULL, gemm);
}

#if FR_IS_FLOAT
int fr_forward_cached_f32(const fr_dims *d, float *out, float *h_n, float *c_n,
                          const float *x, const int *lengths, const float *h0,
                          const float *c0, const float *w_ih, const float *w_hh,
                          const float *b_ih, const float *b_hh, float *ws, float *cache,
                          fr_sgemm_t gemm)
{
    return FR(forward_impl)(d, out, h_n, c_n, NULL, NULL, NULL, x, lengths, h0, c0, w_ih,
                            w_hh, b_ih, b_hh, ws, cache, gemm);
}
#endif

/* Walks samples [j*c, j*c + nb) back through time (in forward's row order, longest
   first); writes their rows of dgh (loop order) and GRU's dgi (x's row order), and this
   chunk's partial bias gradients (summed in a fixed order: deterministic). Before that,
   when given: rowmap, x's row of each of its loop rows (a bijection: loop step t < len
   maps to its time step, t >= len to x's padding row of step t), and xg, x in loop
   order (zeros past each length). */
static void FR(backward_chunk)(const fr_dims *d, int j, real *w, real *dgh_all,
                               real *dgi_all, real *dbh, real *dbi, real *dh0, real *dc0,
                               const real *d_out, const real *d_h_n, const real *d_c_n,
                               const real *h_all, const real *c_all, const real *store,
                               const int *lengths, const real *w_hh, gemm_t gemm,
                               const float *pk_hh, real *pih, const real *x, int *rowmap,
                               real *xg)
{
    const int B = d->batch, T = d->steps, H = d->hidden, cell = d->cell;
    const int c = fr_chunk(d), GH = fr_gates(cell) * H, S = fr_store_width(cell, H);
    const int b0 = j * c, nb = B - b0 < c ? B - b0 : c, lstm = cell == FR_LSTM;
    real *dh = w;                               /* (nb, H) dL/dh of the current step */
    real *dc = w + (size_t)c * H;               /* (nb, H) dL/dc (LSTM) */
    int perm[FR_MAX_CHUNK], len[FR_MAX_CHUNK] = {0};
    real *dgi_rows[FR_MAX_CHUNK];
    size_t xrow[FR_MAX_CHUNK];
    real *dgh_rows[FR_MAX_CHUNK];
    fr_sort_chunk(lengths, b0, nb, perm, len);
    if (pih) memset(pih, 0, sizeof(real) * (size_t)GH * d->input);
    const int Tc = len[0], gru = cell == FR_GRU;
    if (rowmap)
        for (int t = 0; t < T; t++)
            for (int r = 0; r < nb; r++) {
                const int L = len[r];
                rowmap[(size_t)t * B + b0 + r] =
                    (int)fr_row(d, t < L ? fr_time_index(d, t, L) : t, b0 + perm[r]);
            }
    if (xg) FR(gather_inputs)(d, x, 0, T, b0, nb, perm, len, xg + (size_t)b0 * d->input, B);

    for (int r = 0; r < nb; r++) {
        const size_t src = (size_t)(b0 + perm[r]) * H;
        if (d_h_n) memcpy(dh + (size_t)r * H, d_h_n + src, sizeof(real) * H);
        else memset(dh + (size_t)r * H, 0, sizeof(real) * H);
        if (lstm) {
            if (d_c_n) memcpy(dc + (size_t)r * H, d_c_n + src, sizeof(real) * H);
            else memset(dc + (size_t)r * H, 0, sizeof(real) * H);
        }
    }
    memset(dbh, 0, sizeof(real) * GH);
    memset(dbi, 0, sizeof(real) * GH);
    for (int t = T - 1; t >= Tc; t--)
        memset(dgh_all + ((size_t)t * B + b0) * GH, 0, sizeof(real) * nb * GH);

    int nact = 0;                               /* rows [0, nact) take step t */
    for (int t = Tc - 1; t >= 0; t--) {
        while (nact < nb && len[nact] > t) nact++;
        const size_t row = (size_t)t * B + b0, next = (size_t)(t + 1) * B + b0;
        real *gh = dgh_all + row * GH;
        if (nact < nb)                          /* carried rows: no gradient, dh passes */
            memset(gh + (size_t)nact * GH, 0, sizeof(real) * (nb - nact) * GH);
        for (int r = 0; r < nact; r++) {
            const int b = b0 + perm[r], tt = fr_time_index(d, t, len[r]);
            if (d_out) FR(add_to)(dh + (size_t)r * H, d_out + fr_row(d, tt, b) * d->ld, H);
            xrow[r] = fr_row(d, tt, b);
            dgi_rows[r] = gru ? dgi_all + xrow[r] * GH : NULL;
        }
        switch (cell) {
        case FR_LSTM:
            FR(lstm_rows_backward)(nact, H, store + row * S, c_all + row * H, c_all + next * H,
                                   dh, dc, gh);
            break;
        case FR_GRU:
            FR(gru_rows_backward)(nact, H, store + row * S, h_all + row * H, dh, gh, dgi_rows);
            break;
        default:
            FR(rnn_rows_backward)(nact, H, cell == FR_RNN_RELU, h_all + next * H, dh, gh);
        }
        for (int r = 0; r < nact; r++) {
            FR(add_to)(dbh, gh + (size_t)r * GH, GH);
            if (gru) FR(add_to)(dbi, dgi_rows[r], GH);
            if (pih && !gru) dgh_rows[r] = gh + (size_t)r * GH;
        }
        if (pih)            /* this step's share of dW_ih, its rows still in cache */
            FR(add_outer)(pih, x, xrow, gru ? dgi_rows : dgh_rows, nact,
                          d->input, GH);
        /* dh_{t-1} = direct part (left in dh by the cell) + dG W_hh, running rows only */
        FR_MUL_W(gemm, pk_hh, nact, H, GH, gh, GH, w_hh, 1, dh, H);
    }
    for (int r = 0; r < nb; r++) {
        const size_t dst = (size_t)(b0 + perm[r]) * H;
        memcpy(dh0 + dst, dh + (size_t)r * H, sizeof(real) * H);
        if (lstm) memcpy(dc0 + dst, dc + (size_t)r * H, sizeof(real) * H);
    }
    if (gru)        /* x's padding rows: zero input-side gradient */
        for (int r = 0; r < nb; r++)
            for (int tt = len[r]; tt < T; tt++)
                memset(dgi_all + fr_row(d, tt, b0 + perm[r]) * GH, 0, sizeof(real) * GH);
}

int FR(fr_backward)(const fr_dims *d, real *dx, real *dw_ih, real *dw_hh,
                    real *db_ih, real *db_hh, real *dh0, real *dc0,
                    const real *d_out, const real *d_h_n, const real *d_c_n,
                    const real *h_all, const real *c_all, real *store,
                    const real *x, const int *lengths,
                    const real *w_ih, const real *w_hh,
                    int accumulate_dx, real *ws, gemm_t gemm)
{
    if (!fr_dims_ok(d) || !fr_lengths_ok(d, lengths)) return FR_EBADDIMS;
    const int B = d->batch, T = d->steps, I = d->input, H = d->hidden;
    const int GH = fr_gates(d->cell) * H, nchunks = fr_nchunks(d);
    const int nt = fr_useful_threads(d);   /* not capped by chunks: the GEMM blocks use all */
    const int gru = d->cell == FR_GRU;
    const size_t dg = fr_dg_size(d), xrows = (size_t)T * B * I;
    real *dg_ws = FR(aligned)(ws);
    /* dG (T,B,GH) in loop order: LSTM's over the stored gates (the same layout, each row
       read by its step before the step writes it), the other cells' in ws */
    real *dgh = d->cell == FR_LSTM ? store : dg_ws;
    /* the input side's dG: GRU's own (its n gate differs), in x's row order (dW_ih = dgi^T
       x and dX = dgi W_ih straight from x's rows); LSTM, RNN: dG itself, loop order */
    real *dgi = gru ? dg_ws + fr_round(dg) : dgh;
    real *dbias = dg_ws + fr_dg_ws(d);                  /* (nchunks, 2, GH) partial sums */
    real *packed = dbias + fr_round((size_t)nchunks * 2 * GH);
    real *wthreads = packed + fr_packed_weights(d);
    const size_t per = fr_round((size_t)2 * fr_chunk(d) * H);
    const float *pk_hh, *pk_ih;
    /* with several threads they pack the panels together, in the region */
    FR(pack_weights)(d, packed, w_ih, w_hh, 1, nt < 2, &pk_hh, &pk_ih);
    const int npk = nt > 1 && pk_hh != NULL ? FR(pack_items)(d, 1) : 0;
    /* the large GEMMs after the loop, cut in pieces fixed by the problem (deterministic
       for any thread count): dW_hh and dW_ih by segments of rows (fr_kseg), dX by blocks
       of (t, b) rows */
    const int rows = T * B, rblk = FR_GEMM_BLOCK_ROWS, nrb = (rows + rblk - 1) / rblk;
    const int nseg = fr_kseg(d), segr = (rows + nseg - 1) / nseg;
    const int step_ih = fr_step_ih(d);                      /* dW_ih in the loop */
    /* dW_hh and dW_ih of one dG in one pass over it (LSTM, RNN with the kernel): each
       item then computes both for its gate rows, each tile of dG read once (M LSTM: 1.3
       ms of a 13 ms backward). Not with 16 inputs or fewer, where fr_gemm_tn computes
       dW_ih^T instead of padding a panel of 32 columns (S LSTM: 5% slower fused). */
    int fuse_ih = 0;
#if FR_IS_FLOAT
    fuse_ih = fr_use_kernel() && !step_ih && !gru && H > FR_NR / 2 && I > FR_NR / 2;
#endif
    const int bh = fr_wblock(d, fuse_ih ? H + I : H), bi = fr_wblock(d, I);   /* gate rows */
    const int nbh = (GH + bh - 1) / bh, nbi = step_ih || fuse_ih ? 0 : (GH + bi - 1) / bi;
    const int nwh = nseg * nbh, nw = nwh + nseg * nbi;      /* dW_hh items, all dW items */
    const int ndx = dx ? nrb : 0;                           /* no dX wanted: dx NULL */
    real *part_hh = wthreads + (size_t)nt * per;     /* (nseg, GH, H) partial dW_hh */
    real *part_ih = part_hh + (size_t)nseg * GH * H; /* (nseg, GH, I) partial dW_ih */
    real *after = part_hh + fr_round((size_t)nseg * GH * (H + I));
    real *pih = step_ih ? after : NULL;              /* (nchunks, I, GH) partial dW_ih^T */
    real *xg = step_ih || gru ? NULL : after;        /* (T,B,I) x in loop order */
    real *dxl = after + (step_ih ? fr_round((size_t)nchunks * GH * I)
                                 : gru ? 0 : fr_round(xrows));    /* nt blocks of dX rows */
    const size_t per_dx = fr_round((size_t)rblk * I);
    int *rowmap = dx && !gru ? (int *)(void *)(dxl + (size_t)nt * per_dx) : NULL;   /* (T,B) */
    const real *xin = gru ? x : xg;                  /* dW_ih's right-hand rows */
#pragma omp parallel num_threads(nt)
    {
        FR_FTZ_ON();
        FR_NOTE_TEAM();
        real *w = wthreads + per * (size_t)FR_THREAD_NUM();
        if (npk) {
#pragma omp for schedule(static)
            for (int q = 0; q < npk; q++)
                FR(pack_item)(d, pk_hh, pk_ih, w_ih, w_hh, 1, q);
        }
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < nchunks; j++)
            FR(backward_chunk)(d, j, w, dgh, dgi, dbias + (size_t)j * 2 * GH,
                               dbias + (size_t)j * 2 * GH + GH, dh0, dc0, d_out, d_h_n,
                               d_c_n, h_all, c_all, store, lengths, w_hh, gemm, pk_hh,
                               pih ? pih + (size_t)j * I * GH : NULL, x, rowmap, xg);
        /* implicit barrier: every dG row is written */
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < nw + ndx; q++) {
            if (q < nw) {      /* gate rows [g0, g0 + ng) of the partial dW of segment s */
                const int hh = q < nwh, qq = hh ? q : q - nwh, nbk = hh ? nbh : nbi;
                const int s = qq / nbk, blk = hh ? bh : bi, g0 = (qq % nbk) * blk;
                const int ng = GH - g0 < blk ? GH - g0 : blk;
                const int r0 = s * segr, nr = rows - r0 < segr ? rows - r0 : segr;
                real *ph = part_hh + ((size_t)s * GH + g0) * H;
                real *pi = part_ih + ((size_t)s * GH + g0) * I;
#if FR_IS_FLOAT
                if (fuse_ih)                         /* dG^T [h_prev, x] */
                    fr_gemm_tn2(ng, nr, dgh + (size_t)r0 * GH + g0, GH,
                                H, h_all + (size_t)r0 * H, H, ph, H,
                                I, xg + (size_t)r0 * I, I, pi, I);
                else
#endif
                if (hh)                              /* dG^T h_prev */
                    FR(mul_tn)(gemm, ng, H, nr, dgh + (size_t)r0 * GH + g0, GH,
                               h_all + (size_t)r0 * H, H, ph, H);
                else                                 /* dG^T x (LSTM, RNN: loop order) */
                    FR(mul_tn)(gemm, ng, I, nr, dgi + (size_t)r0 * GH + g0, GH,
                               xin + (size_t)r0 * I, I, pi, I);
            } else if (gru) {                        /* dX[r0:r1] (+)= dG W_ih */
                const int r0 = (q - nw) * rblk, nr = rows - r0 < rblk ? rows - r0 : rblk;
                FR_MUL_W(gemm, pk_ih, nr, I, GH, dgi + (size_t)r0 * GH, GH, w_ih,
                          accumulate_dx, dx + (size_t)r0 * I, I);
            } else {    /* dX of loop rows [r0, r0 + nr), scattered to x's rows (each
                           written once: the map is a bijection; padding rows get the
                           zero rows of dG's product) */
                const int r0 = (q - nw) * rblk, nr = rows - r0 < rblk ? rows - r0 : rblk;
                real *blk = dxl + per_dx * (size_t)FR_THREAD_NUM();
                FR_MUL_W(gemm, pk_ih, nr, I, GH, dgh + (size_t)r0 * GH, GH, w_ih, 0, blk, I);
                for (int r = 0; r < nr; r++) {
                    real *dst = dx + (size_t)rowmap[r0 + r] * I;
                    if (accumulate_dx) FR(add_to)(dst, blk + (size_t)r * I, I);
                    else memcpy(dst, blk + (size_t)r * I, sizeof(real) * I);
                }
            }
        }
        /* implicit barrier: every partial is written; add them in segment order */
#pragma omp for schedule(static) nowait
        for (int g = 0; g < GH; g++) {
            for (int s = 0; s < nseg; s++) {
                FR(add_to)(dw_hh + (size_t)g * H, part_hh + ((size_t)s * GH + g) * H, H);
                if (!step_ih)
                    FR(add_to)(dw_ih + (size_t)g * I, part_ih + ((size_t)s * GH + g) * I, I);
            }
            if (step_ih)
                for (int j = 0; j < nchunks; j++)
                    for (int i = 0; i < I; i++)
                        dw_ih[(size_t)g * I + i] += pih[((size_t)j * I + i) * GH + g];
        }
#pragma omp single
        for (int j = 0; j < nchunks; j++) {
            const real *ph = dbias + (size_t)j * 2 * GH;
            const real *pi = d->cell == FR_GRU ? ph + GH : ph;   /* LSTM/RNN: dgi == dgh */
            for (int k = 0; k < GH; k++) db_hh[k] += ph[k];
            for (int k = 0; k < GH; k++) db_ih[k] += pi[k];
        }
        FR_FTZ_OFF();
    }
    return FR_OK;
}

#endif /* template body */
