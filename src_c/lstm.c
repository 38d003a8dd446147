/* lstm.c — the LSTM cell: one sample's step, forward and backward.

   PyTorch's nn.LSTM, gate order i, f, g, o:
     i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      f = sigmoid(... f rows ...)
     g = tanh(W_ig x + b_ig + W_hg h + b_hg)         o = sigmoid(... o rows ...)
     c' = f * c + i * g                              h' = o * tanh(c')
   Stored for backward (S = 4H): the activated gates [i, f, g, o]; c lives in c_all and
   tanh(c') is recomputed in backward (storing it saved no measurable time but cost
   T*B*H floats per layer).
   The recurrence itself (GEMMs, chunks, threads, lengths) is recurrence.c. */
#ifndef FR_TEMPLATE
#define FR_TEMPLATE "lstm.c"
#include "instantiate.h"
#else

static inline __attribute__((always_inline)) void
FR(lstm_step_forward)(int H, const real *xp, real *a, const real *b_ih, const real *b_hh,
                      real *h, real *c, real *store)
{
    const int GH = 4 * H;
    real *gt = store ? store : a;       /* gates activated where backward will read them */
    if (xp) {
        for (int j = 0; j < GH; j++) gt[j] = xp[j] + a[j] + b_ih[j] + b_hh[j];
    } else {                            /* a already holds the input projection */
        for (int j = 0; j < GH; j++) gt[j] = a[j] + b_ih[j] + b_hh[j];
    }
    /* activate in place, then update the cell in a second pass: one fused loop ran at
       scalar speed (see shared/STYLE.md) */
    FR(vsigmoid)(gt, 2 * H);
    FR(vtanh)(gt + 2 * H, H);
    FR(vsigmoid)(gt + 3 * H, H);
    const real *ig = gt, *fg = gt + H, *gg = gt + 2 * H, *og = gt + 3 * H;
    for (int j = 0; j < H; j++) c[j] = fg[j] * c[j] + ig[j] * gg[j];
    for (int j = 0; j < H; j++) h[j] = c[j];
    FR(vtanh)(h, H);
    for (int j = 0; j < H; j++) h[j] *= og[j];
}

static inline __attribute__((always_inline)) void
FR(lstm_step_backward)(int H, const real *store, const real *restrict c_prev,
                       const real *c_t, real *restrict dh, real *restrict dc, real *dgh)
{
    /* dgh may be store itself (recurrence.c writes dG over the stored gates): each unit's
       four gates are read before its four gradients are written */
    const real *ig = store, *fg = store + H, *gg = store + 2 * H, *og = store + 3 * H;
    enum { NB = 64 };
    real tc[NB];                        /* tanh(c_t) of a block of units */
    for (int j0 = 0; j0 < H; j0 += NB) {
        const int nb = H - j0 < NB ? H - j0 : NB;
        for (int k = 0; k < nb; k++) tc[k] = c_t[j0 + k];
        FR(vtanh)(tc, nb);
        for (int k = 0; k < nb; k++) {
            const int j = j0 + k;
            real t = tc[k], i = ig[j], f = fg[j], g = gg[j], o = og[j];
            real dct = dc[j] + dh[j] * o * (1 - t * t);
            dgh[j] = dct * g * i * (1 - i);
            dgh[H + j] = dct * c_prev[j] * f * (1 - f);
            dgh[2 * H + j] = dct * i * (1 - g * g);
            dgh[3 * H + j] = dh[j] * t * o * (1 - o);
            dc[j] = dct * f;
            dh[j] = 0;                  /* all of dL/dh_{t-1} flows through W_hh */
        }
    }
}

/* n rows per call: one call per step and chunk, the row loop inside the AVX-512 clone */
FR_CLONES void FR(lstm_rows_forward)(int n, int H, const real *xp, real *a, const real *b_ih,
                                     const real *b_hh, real *h, int ldh, real *c, real *store,
                                     real *h_keep, real *c_keep)
{
    const int GH = 4 * H;
#if FR_IS_FLOAT
    if (fr_avx512) {                    /* one pass per 16 units (vmath.c) */
        fr_lstm_rows_forward_avx512(n, H, xp, a, b_ih, b_hh, h, ldh, c, store, h_keep, c_keep, 0);
        return;
    }
#endif
    for (int r = 0; r < n; r++) {
        FR(lstm_step_forward)(H, xp ? xp + (size_t)r * GH : NULL, a + (size_t)r * GH, b_ih,
                              b_hh, h + (size_t)r * ldh, c + (size_t)r * H,
                              store ? store + (size_t)r * GH : NULL);
        if (h_keep) memcpy(h_keep + (size_t)r * H, h + (size_t)r * ldh, sizeof(real) * H);
        if (c_keep) memcpy(c_keep + (size_t)r * H, c + (size_t)r * H, sizeof(real) * H);
    }
}

FR_CLONES void FR(lstm_rows_backward)(int n, int H, const real *store, const real *c_prev,
                                      const real *c_t, real *dh, real *dc, real *dgh)
{
    const int GH = 4 * H;
#if FR_IS_FLOAT
    if (fr_avx512) {
        fr_lstm_rows_backward_avx512(n, H, store, c_prev, c_t, dh, dc, dgh);
        return;
    }
#endif
    for (int r = 0; r < n; r++)
        FR(lstm_step_backward)(H, store + (size_t)r * GH, c_prev + (size_t)r * H,
                               c_t + (size_t)r * H, dh + (size_t)r * H, dc + (size_t)r * H,
                               dgh + (size_t)r * GH);
}

#endif
