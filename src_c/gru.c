/* gru.c — the GRU cell: one sample's step, forward and backward.

   PyTorch's nn.GRU, gate order r, z, n, reset gate applied AFTER the recurrent product:
     r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(... z rows ...)
     n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
     h' = (1 - z) * n + z * h
   Stored for backward (S = 4H): [r, z, n, hn] with hn = W_hn h + b_hn.
   The gradients of the two pre-activations differ in the n block (dgi: dL/dn_pre,
   dgh: r * dL/dn_pre), so backward writes both. */
#ifndef FR_TEMPLATE
#define FR_TEMPLATE "gru.c"
#include "instantiate.h"
#else

static inline __attribute__((always_inline)) void
FR(gru_step_forward)(int H, const real *xp, real *a, const real *b_ih, const real *b_hh,
                     real *h, real *store)
{
    /* inference: everything in the scratch row a (n overwrites hn element by element) */
    real *s = store ? store : a;
    real *hn = store ? store + 3 * H : a + 2 * H;
    real *n = s + 2 * H;
    for (int j = 0; j < 2 * H; j++) s[j] = xp[j] + a[j] + b_ih[j] + b_hh[j];
    FR(vsigmoid)(s, 2 * H);
    for (int j = 0; j < H; j++) hn[j] = a[2 * H + j] + b_hh[2 * H + j];
    for (int j = 0; j < H; j++) n[j] = xp[2 * H + j] + b_ih[2 * H + j] + s[j] * hn[j];
    FR(vtanh)(n, H);
    const real *z = s + H;
    for (int j = 0; j < H; j++) h[j] = n[j] + z[j] * (h[j] - n[j]);
}

static inline __attribute__((always_inline)) void
FR(gru_step_backward)(int H, const real *restrict store, const real *restrict h_prev,
                      real *restrict dh, real *restrict dgh, real *restrict dgi)
{
    const real *rg = store, *zg = store + H, *ng = store + 2 * H, *hn = store + 3 * H;
    for (int j = 0; j < H; j++) {
        real r = rg[j], z = zg[j], n = ng[j], d = dh[j];
        real dan = d * (1 - z) * (1 - n * n);
        real dar = dan * hn[j] * r * (1 - r);
        real daz = d * (h_prev[j] - n) * z * (1 - z);
        dgh[j] = dar;  dgh[H + j] = daz;  dgh[2 * H + j] = dan * r;
        dgi[j] = dar;  dgi[H + j] = daz;  dgi[2 * H + j] = dan;
        dh[j] = d * z;                  /* the path that bypasses W_hh */
    }
}

FR_CLONES void FR(gru_rows_forward)(int n, int H, const real *xp, real *a, const real *b_ih,
                                    const real *b_hh, real *h, int ldh, real *store,
                                    real *h_keep)
{
    const int GH = 3 * H;
#if FR_IS_FLOAT
    if (fr_avx512) {                    /* one pass per 16 units (vmath.c) */
        fr_gru_rows_forward_avx512(n, H, xp, a, b_ih, b_hh, h, ldh, store, h_keep, 0);
        return;
    }
#endif
    for (int r = 0; r < n; r++) {
        FR(gru_step_forward)(H, xp + (size_t)r * GH, a + (size_t)r * GH, b_ih, b_hh,
                             h + (size_t)r * ldh, store ? store + (size_t)r * 4 * H : NULL);
        if (h_keep) memcpy(h_keep + (size_t)r * H, h + (size_t)r * ldh, sizeof(real) * H);
    }
}

FR_CLONES void FR(gru_rows_backward)(int n, int H, const real *store, const real *h_prev,
                                     real *dh, real *dgh, real *const *dgi_rows)
{
    const int GH = 3 * H;
#if FR_IS_FLOAT
    if (fr_avx512) {                    /* one pass per 16 units (vmath.c) */
        fr_gru_rows_backward_avx512(n, H, store, h_prev, dh, dgh, dgi_rows);
        return;
    }
#endif
    for (int r = 0; r < n; r++)
        FR(gru_step_backward)(H, store + (size_t)r * 4 * H, h_prev + (size_t)r * H,
                              dh + (size_t)r * H, dgh + (size_t)r * GH, dgi_rows[r]);
}

#endif
