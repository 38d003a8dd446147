/* rnn.c — the plain (Elman) RNN cell: one sample's step, forward and backward.

   PyTorch's nn.RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu.
   Nothing is stored besides h itself (S = 0): the derivative of either activation
   is a function of its output. */
#ifndef FR_TEMPLATE
#define FR_TEMPLATE "rnn.c"
#include "instantiate.h"
#else

static inline __attribute__((always_inline)) void
FR(rnn_step_forward)(int H, int relu, const real *xp, real *a, const real *b_ih,
                     const real *b_hh, real *h)
{
    if (xp) {
        for (int j = 0; j < H; j++) h[j] = xp[j] + a[j] + b_ih[j] + b_hh[j];
    } else {                            /* a already holds the input projection */
        for (int j = 0; j < H; j++) h[j] = a[j] + b_ih[j] + b_hh[j];
    }
    if (relu) {
        for (int j = 0; j < H; j++) h[j] = h[j] > 0 ? h[j] : 0;
    } else {
        FR(vtanh)(h, H);
    }
}

static inline __attribute__((always_inline)) void
FR(rnn_step_backward)(int H, int relu, const real *restrict h_t, real *restrict dh,
                      real *restrict dgh)
{
    if (relu) {
        for (int j = 0; j < H; j++) dgh[j] = h_t[j] > 0 ? dh[j] : 0;
    } else {
        for (int j = 0; j < H; j++) dgh[j] = dh[j] * (1 - h_t[j] * h_t[j]);
    }
    for (int j = 0; j < H; j++) dh[j] = 0;
}

FR_CLONES void FR(rnn_rows_forward)(int n, int H, int relu, const real *xp, real *a,
                                    const real *b_ih, const real *b_hh, real *h, int ldh,
                                    real *h_keep)
{
    for (int r = 0; r < n; r++) {
        FR(rnn_step_forward)(H, relu, xp ? xp + (size_t)r * H : NULL, a + (size_t)r * H,
                             b_ih, b_hh, h + (size_t)r * ldh);
        if (h_keep) memcpy(h_keep + (size_t)r * H, h + (size_t)r * ldh, sizeof(real) * H);
    }
}

FR_CLONES void FR(rnn_rows_backward)(int n, int H, int relu, const real *h_t, real *dh,
                                     real *dgh)
{
    for (int r = 0; r < n; r++)
        FR(rnn_step_backward)(H, relu, h_t + (size_t)r * H, dh + (size_t)r * H,
                              dgh + (size_t)r * H);
}

#endif
