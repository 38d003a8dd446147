/* stream.c — streaming inference: a few steps at a time, the state kept between calls.

   Serving a recurrent model one sample, frame or token at a time: re-running the whole
   history for each new step is O(T^2). A stream holds, in ONE caller-allocated buffer
   (ws), the weights of a stack of unidirectional layers and of an optional dense head,
   packed once, and the running state of B sequences; a call advances them K steps.

   Bits: each step does the float operations fr_forward (recurrence.c) does for that step
   of the whole sequence, in the same order: the same packed kernel (fr_gemm_packed,
   whose result for a row does not depend on the other rows), the same grouping of the
   products (one [x_t, h] [W_ih, W_hh]^T, or x_t W_ih^T and h W_hh^T apart: the choice
   fr_forward_fuses reports for the forward being reproduced), the same cell row
   functions (cells.h), flush-to-zero for the recurrence only; then the head exactly as
   fr_dense_forward (dense.c) computes a row. So a sequence fed step by step gives the
   bits of the full forward (float32 with the AVX-512 kernel; the BLAS fallback groups
   rows differently and agrees to rounding only).
   Input handling of the estimators is here too, so a step is one C call: float features
   standardised as (x - mean) / scale in the real type, or token ids mapped to rows of
   the embedding table (an id >= V or not seen in fit reads the reserved row V).
   Not here: bidirectional layers (a reverse direction needs the future), dropout
   (inference), softmax and target unscaling (float64 numpy, in fastrnn/streaming.py,
   as predict does them).

   ws layout (elements of real, regions rounded to 16 = 64 bytes of float):
     per layer k (I_k = I for k = 0, else H; GH = gates * H):
       wts  fr_packed_size(GH, I_k + H)  packed [W_ih, W_hh] (fused), packed W_hh then
                                         W_ih (apart), or W_ih then W_hh raw (no kernel)
       bias 2 GH                         b_ih, b_hh
       xh   (B, I_k + H)                 [x_t, h] rows; h lives in its right part when fused
       hb   (B, H)                       h when the products are apart
       cs   (B, H)                       c (LSTM)
     then the head (fr_packed_size(M, H) + M), mean and scale (2 I), and scratch:
       a, xp (B, GH_max) ... x0 (B, I), xg (B, max(I, H)), hrow (B, H), y (B, M). */
#ifndef FR_TEMPLATE
#include <stdint.h>
#include <math.h>
#include "fastrnn.h"
#include "kernels.h"
#include "threads.h"   /* FR_FTZ_ON / FR_FTZ_OFF */

#define FR_SALIGN 16
static size_t fr_sround(size_t n) { return (n + FR_SALIGN - 1) / FR_SALIGN * FR_SALIGN; }

static int fr_stream_dims_ok(const fr_stream_dims *d)
{
    return d->cell >= FR_LSTM && d->cell <= FR_RNN_RELU && d->layers >= 1 && d->batch >= 1
        && d->input >= 1 && d->hidden >= 1 && d->outputs >= 0 && d->vocab >= 0
        && d->layers <= (1 << 16) && d->batch <= (1 << 24) && d->input <= (1 << 24)
        && d->hidden <= (1 << 20) && d->outputs <= (1 << 26);
}

static int fr_stream_in(const fr_stream_dims *d, int k) { return k == 0 ? d->input : d->hidden; }

/* elements of layer k's region */
static size_t fr_stream_layer_size(const fr_stream_dims *d, int k)
{
    const size_t B = (size_t)d->batch, H = (size_t)d->hidden, Ik = (size_t)fr_stream_in(d, k);
    const size_t GH = (size_t)fr_gates(d->cell) * H;
    return fr_sround(fr_packed_size((int)GH, (int)(Ik + H))) + fr_sround(2 * GH)
         + fr_sround(B * (Ik + H)) + 2 * fr_sround(B * H);
}

/* offset of layer k's region */
static size_t fr_stream_layer_offset(const fr_stream_dims *d, int k)
{
    if (k == 0) return 0;
    return fr_stream_layer_size(d, 0) + (size_t)(k - 1) * fr_stream_layer_size(d, 1);
}

size_t fr_stream_workspace(const fr_stream_dims *d)
{
    if (!fr_stream_dims_ok(d)) return 0;
    const double B = d->batch, H = d->hidden, I = d->input, M = d->outputs;
    const double GH = (double)fr_gates(d->cell) * H, L = d->layers;
    /* a generous double-precision bound first, so the size_t arithmetic cannot wrap */
    const double bound = (GH + 32) * (I + 2 * H) * L + (L + 4) * B * (I + 4 * H + GH)
                       + (M + 32) * (H + 1) + 2 * I + 2 * B * (GH + M) + 64 * (L + 16);
    if (bound > 4e18 / 8) return 0;
    const size_t Bz = (size_t)d->batch, Hz = (size_t)d->hidden, Iz = (size_t)d->input;
    const size_t Mz = (size_t)d->outputs, GHz = (size_t)fr_gates(d->cell) * Hz;
    size_t n = fr_stream_layer_offset(d, d->layers);
    n += fr_sround(fr_packed_size((int)Mz, (int)Hz)) + fr_sround(Mz) + 2 * fr_sround(Iz);
    n += 2 * fr_sround(Bz * GHz) + fr_sround(Bz * Iz) + fr_sround(Bz * (Iz > Hz ? Iz : Hz))
       + fr_sround(Bz * Hz) + fr_sround(Bz * Mz);
    return FR_SALIGN + n;
}

/* whether layer k's step is one product [x_t, h] [W_ih, W_hh]^T, as in fr_forward_f32 */
static int fr_stream_fused(const fr_stream_dims *d, int k)
{
    fr_dims f;
    f.cell = d->cell;
    f.batch = d->batch;
    f.steps = 1;
    f.input = fr_stream_in(d, k);
    f.hidden = d->hidden;
    f.reverse = 0;
    f.n_threads = 1;
    f.chunk = d->chunk;
    f.ld = d->hidden;
    f.batch_first = 1;
    return fr_forward_fuses(&f);
}

#define FR_TEMPLATE "stream.c"
#include "instantiate.h"

#else /* template body */

/* The pieces of ws, found from the dims (a few additions per call). */
typedef struct {
    real *wts, *bias, *xh, *hb, *cs;   /* of one layer */
    real *h;                           /* its running h: in xh (fused) or hb */
    int ldh, in, fused;
} FR(stream_layer);

typedef struct {
    real *head_w, *head_b, *mean, *scale, *a, *xp, *x0, *xg, *hrow, *y;
} FR(stream_shared);

static real *FR(stream_base)(real *ws)
{
    const uintptr_t p = (uintptr_t)ws, r = (p + 63) & ~(uintptr_t)63;
    return (real *)(void *)((char *)ws + (r - p));
}

static FR(stream_layer) FR(stream_layer_at)(const fr_stream_dims *d, real *base, int k)
{
    FR(stream_layer) l;
    const size_t B = (size_t)d->batch, H = (size_t)d->hidden;
    const size_t Ik = (size_t)fr_stream_in(d, k), GH = (size_t)fr_gates(d->cell) * H;
    l.in = (int)Ik;
    l.wts = base + fr_stream_layer_offset(d, k);
    l.bias = l.wts + fr_sround(fr_packed_size((int)GH, (int)(Ik + H)));
    l.xh = l.bias + fr_sround(2 * GH);
    l.hb = l.xh + fr_sround(B * (Ik + H));
    l.cs = l.hb + fr_sround(B * H);
#if FR_IS_FLOAT
    l.fused = fr_stream_fused(d, k);
#else
    l.fused = 0;
#endif
    l.h = l.fused ? l.xh + Ik : l.hb;
    l.ldh = l.fused ? (int)(Ik + H) : (int)H;
    return l;
}

static FR(stream_shared) FR(stream_shared_at)(const fr_stream_dims *d, real *base)
{
    FR(stream_shared) s;
    const size_t B = (size_t)d->batch, H = (size_t)d->hidden, I = (size_t)d->input;
    const size_t M = (size_t)d->outputs, GH = (size_t)fr_gates(d->cell) * H;
    s.head_w = base + fr_stream_layer_offset(d, d->layers);
    s.head_b = s.head_w + fr_sround(fr_packed_size((int)M, (int)H));
    s.mean = s.head_b + fr_sround(M);
    s.scale = s.mean + fr_sround(I);
    s.a = s.scale + fr_sround(I);
    s.xp = s.a + fr_sround(B * GH);
    s.x0 = s.xp + fr_sround(B * GH);
    s.xg = s.x0 + fr_sround(B * I);
    s.hrow = s.xg + fr_sround(B * (I > H ? I : H));
    s.y = s.hrow + fr_sround(B * H);
    return s;
}

/* the packed kernel runs the products (float32 on AVX-512), else BLAS */
static inline int FR(stream_kernel)(void)
{
#if FR_IS_FLOAT
    return fr_avx512;
#else
    return 0;
#endif
}

int FR(fr_stream_init)(const fr_stream_dims *d, real *ws, const real *const *w_ih,
                       const real *const *w_hh, const real *const *b_ih,
                       const real *const *b_hh, const real *head_w, const real *head_b,
                       const real *mean, const real *scale)
{
    if (!fr_stream_workspace(d)) return FR_EBADDIMS;
    real *base = FR(stream_base)(ws);
    const int H = d->hidden, GH = fr_gates(d->cell) * H, B = d->batch, M = d->outputs;
    for (int k = 0; k < d->layers; k++) {
        FR(stream_layer) l = FR(stream_layer_at)(d, base, k);
        const int Ik = l.in;
#if FR_IS_FLOAT
        if (FR(stream_kernel)()) {
            if (l.fused) {
                fr_pack_wt2(l.wts, w_ih[k], Ik, Ik, w_hh[k], H, H, GH);
            } else {
                fr_pack_wt(l.wts, w_hh[k], GH, H, H);
                fr_pack_wt(l.wts + fr_packed_size(GH, H), w_ih[k], GH, Ik, Ik);
            }
        } else
#endif
        {
            memcpy(l.wts, w_ih[k], sizeof(real) * (size_t)GH * Ik);
            memcpy(l.wts + (size_t)GH * Ik, w_hh[k], sizeof(real) * (size_t)GH * H);
        }
        memcpy(l.bias, b_ih[k], sizeof(real) * GH);
        memcpy(l.bias + GH, b_hh[k], sizeof(real) * GH);
        memset(l.xh, 0, sizeof(real) * (size_t)B * (Ik + H));
        memset(l.hb, 0, sizeof(real) * (size_t)B * H);
        memset(l.cs, 0, sizeof(real) * (size_t)B * H);
    }
    FR(stream_shared) s = FR(stream_shared_at)(d, base);
    if (M > 0) {
#if FR_IS_FLOAT
        if (FR(stream_kernel)() && M >= FR_NR / 2) fr_pack_wt(s.head_w, head_w, M, H, H);
        else
#endif
        memcpy(s.head_w, head_w, sizeof(real) * (size_t)M * H);
        memcpy(s.head_b, head_b, sizeof(real) * M);
    }
    if (d->scaled) {
        memcpy(s.mean, mean, sizeof(real) * d->input);
        memcpy(s.scale, scale, sizeof(real) * d->input);
    }
    return FR_OK;
}

int FR(fr_stream_state)(const fr_stream_dims *d, real *ws, real *h, real *c, int write)
{
    if (!fr_stream_workspace(d)) return FR_EBADDIMS;
    real *base = FR(stream_base)(ws);
    const size_t B = (size_t)d->batch, H = (size_t)d->hidden;
    for (int k = 0; k < d->layers; k++) {
        FR(stream_layer) l = FR(stream_layer_at)(d, base, k);
        for (size_t b = 0; b < B; b++) {
            real *hs = l.h + b * l.ldh, *hx = h + ((size_t)k * B + b) * H;
            if (write) memcpy(hs, hx, sizeof(real) * H);
            else memcpy(hx, hs, sizeof(real) * H);
        }
        if (d->cell == FR_LSTM && c) {
            real *cx = c + (size_t)k * B * H;
            if (write) memcpy(l.cs, cx, sizeof(real) * B * H);
            else memcpy(cx, l.cs, sizeof(real) * B * H);
        }
    }
    return FR_OK;
}

/* C (m x n) = A (m x k) W^T, W (n x k), through column-major BLAS (operands swapped),
   as recurrence.c's FR(gemm_rm) with ta = 0, tb = 1 */
static void FR(stream_gemm)(gemm_t gemm, int m, int n, int k, const real *A, int lda,
                            const real *W, real beta, real *C, int ldc)
{
    char cta = 'N', ctb = 'T';
    real one = 1;
    int ldw = k;
    gemm(&ctb, &cta, &n, &m, &k, &one, (real *)W, &ldw, (real *)A, &lda, &beta, C, &ldc);
}

/* one step of layer k for all B rows; in (B, l.in) rows ld ldi */
static void FR(stream_layer_step)(const fr_stream_dims *d, FR(stream_layer) *l,
                                  FR(stream_shared) *s, const real *in, int ldi, gemm_t gemm)
{
    const int B = d->batch, H = d->hidden, GH = fr_gates(d->cell) * H, Ik = l->in;
    const real *bi = l->bias, *bh = l->bias + GH;
    const real *xps = NULL;
    if (l->fused) {
        for (int r = 0; r < B; r++)
            memcpy(l->xh + (size_t)r * l->ldh, in + (size_t)r * ldi, sizeof(real) * Ik);
#if FR_IS_FLOAT
        fr_gemm_packed(B, GH, Ik + H, l->xh, l->ldh, l->wts, 0, s->a, GH);
#endif
    } else {
        for (int r = 0; r < B; r++)
            memcpy(s->xg + (size_t)r * Ik, in + (size_t)r * ldi, sizeof(real) * Ik);
#if FR_IS_FLOAT
        if (FR(stream_kernel)()) {
            fr_gemm_packed(B, GH, Ik, s->xg, Ik, l->wts + fr_packed_size(GH, H), 0, s->xp, GH);
            fr_gemm_packed(B, GH, H, l->h, H, l->wts, 0, s->a, GH);
        } else
#endif
        {
            FR(stream_gemm)(gemm, B, GH, Ik, s->xg, Ik, l->wts, 0, s->xp, GH);
            FR(stream_gemm)(gemm, B, GH, H, l->h, H, l->wts + (size_t)GH * Ik, 0, s->a, GH);
        }
        xps = s->xp;
    }
    switch (d->cell) {
    case FR_LSTM:
        FR(lstm_rows_forward)(B, H, xps, s->a, bi, bh, l->h, l->ldh, l->cs, NULL, NULL, NULL);
        break;
    case FR_GRU:
        FR(gru_rows_forward)(B, H, xps, s->a, bi, bh, l->h, l->ldh, NULL, NULL);
        break;
    default:
        FR(rnn_rows_forward)(B, H, d->cell == FR_RNN_RELU, xps, s->a, bi, bh, l->h, l->ldh,
                             NULL);
    }
}

/* y (B, M) = hrow (B, H) head_w^T + head_b, as fr_dense_forward computes each row */
static void FR(stream_head)(const fr_stream_dims *d, FR(stream_shared) *s, gemm_t gemm)
{
    const int B = d->batch, H = d->hidden, M = d->outputs;
    for (int r = 0; r < B; r++) memcpy(s->y + (size_t)r * M, s->head_b, sizeof(real) * M);
#if FR_IS_FLOAT
    if (FR(stream_kernel)()) {
        if (M >= FR_NR / 2) fr_gemm_packed(B, M, H, s->hrow, H, s->head_w, 1, s->y, M);
        else fr_gemm_rowdot(B, M, H, s->hrow, H, s->head_w, H, 1, s->y, M);
        return;
    }
#endif
    FR(stream_gemm)(gemm, B, M, H, s->hrow, H, s->head_w, 1, s->y, M);
}

/* the step's input rows (B, I) into x0: standardised floats or embedding rows */
static void FR(stream_input)(const fr_stream_dims *d, FR(stream_shared) *s, int K, int t,
                             const real *x, const long long *ids, const real *emb,
                             const unsigned char *known)
{
    const int B = d->batch, I = d->input;
    for (int b = 0; b < B; b++) {
        real *dst = s->x0 + (size_t)b * I;
        if (d->vocab > 0) {
            const long long id = ids[(size_t)b * K + t];
            const long long row = (id < d->vocab && known[id]) ? id : d->vocab;
            memcpy(dst, emb + (size_t)row * I, sizeof(real) * I);
        } else if (d->scaled) {
            const real *src = x + ((size_t)b * K + t) * I;
            for (int j = 0; j < I; j++) dst[j] = (src[j] - s->mean[j]) / s->scale[j];
        } else {
            memcpy(dst, x + ((size_t)b * K + t) * I, sizeof(real) * I);
        }
    }
}

int FR(fr_stream_step)(const fr_stream_dims *d, real *ws, int K, const real *x,
                       const long long *ids, const real *emb, const unsigned char *known,
                       int every, real *out, gemm_t gemm)
{
    if (!fr_stream_workspace(d) || K < 1) return FR_EBADDIMS;
    if (d->vocab > 0 ? (!ids || !emb || !known) : !x) return FR_EBADDIMS;
    const size_t B = (size_t)d->batch, H = (size_t)d->hidden, M = (size_t)d->outputs;
    const size_t W = M ? M : H, n = B * (size_t)K;
    /* every input checked before the state changes */
    if (d->vocab > 0) {
        for (size_t q = 0; q < n; q++)
            if (ids[q] < 0) return FR_EBADVALUE;
    } else {
        const size_t nx = n * (size_t)d->input;
        for (size_t q = 0; q < nx; q++)
            if (!isfinite(x[q])) return FR_EBADVALUE;
    }
    real *base = FR(stream_base)(ws);
    FR(stream_shared) s = FR(stream_shared_at)(d, base);
    for (int t = 0; t < K; t++) {
        FR(stream_input)(d, &s, K, t, x, ids, emb, known);
        FR(stream_layer) l, prev;
        {
            FR_FTZ_ON();       /* as fr_forward: denormals flushed in the recurrence only */
            for (int k = 0; k < d->layers; k++) {
                l = FR(stream_layer_at)(d, base, k);
                if (k == 0) FR(stream_layer_step)(d, &l, &s, s.x0, d->input, gemm);
                else FR(stream_layer_step)(d, &l, &s, prev.h, prev.ldh, gemm);
                prev = l;
            }
            FR_FTZ_OFF();
        }
        if (!every && t < K - 1) continue;
        real *dst = out + (every ? (size_t)t * W : 0);
        const size_t ld_out = every ? (size_t)K * W : W;
        if (M) {
            for (size_t b = 0; b < B; b++)
                memcpy(s.hrow + b * H, l.h + b * (size_t)l.ldh, sizeof(real) * H);
            FR(stream_head)(d, &s, gemm);
            for (size_t b = 0; b < B; b++)
                memcpy(dst + b * ld_out, s.y + b * M, sizeof(real) * M);
        } else {
            for (size_t b = 0; b < B; b++)
                memcpy(dst + b * ld_out, l.h + b * (size_t)l.ldh, sizeof(real) * H);
        }
    }
    return FR_OK;
}

#endif /* template body */
