/* xent.c — softmax cross-entropy over rows of logits, loss and gradient fused
   (template, see instantiate.h).

   Legend: n = rows, C = classes.  z (n,C) logits, y (n) labels in [0,C), w (n) row
   weights or NULL (ones), s a scale.  With p_r = softmax(z_r), computed from
   z_r - max(z_r) so no exp overflows:
       loss  = sum_r w_r * (-log p_r[y_r])            (returned in double, unscaled)
       dz_r  = s * w_r * (p_r - onehot(y_r))          (when dz is not NULL)
   Rows are cut into blocks of FR_XENT_BLOCK; each block's loss is one partial (rows
   summed in order) and the partials are added in block order: the same bits for any
   thread count. NaN or inf logits give a NaN loss (a diverging fit must be seen). */
#ifndef FR_TEMPLATE
#include "threads.h"
#define FR_TEMPLATE "xent.c"
#include "instantiate.h"
#else

#if FR_IS_FLOAT
#define FR_XENT_BLOCK 256
#define FR_XENT_MIN_WORK 262144.0   /* logits per thread below which threads do not pay */

size_t fr_softmax_xent_workspace(int n)
{
    return n < 0 ? 0 : (size_t)(n + FR_XENT_BLOCK - 1) / FR_XENT_BLOCK;
}

#define FR_XENT_EXP fr_expf
#define FR_XENT_LOG logf
#else
#define FR_XENT_EXP exp
#define FR_XENT_LOG log
#endif

/* w * (-log softmax(z)[y]) of one row; writes the row's dz when dz is not NULL */
FR_CLONES static double FR(xent_row)(int C, const real *restrict z, int y, real w, real s,
                                     real *restrict dz)
{
    real mx = z[0];
    for (int j = 1; j < C; j++) mx = z[j] > mx ? z[j] : mx;
    real sum = 0;
    if (dz) {
        for (int j = 0; j < C; j++) dz[j] = FR_XENT_EXP(z[j] - mx);
        for (int j = 0; j < C; j++) sum += dz[j];
        const real sw = s * w, inv = 1 / sum, py = dz[y] * inv;
        for (int j = 0; j < C; j++) dz[j] = sw * (dz[j] * inv);
        dz[y] = sw * (py - 1);
    } else {
        for (int j = 0; j < C; j++) sum += FR_XENT_EXP(z[j] - mx);
    }
    const real nll = FR_XENT_LOG(sum) - (z[y] - mx);
    return (double)w * (double)nll;
}
#undef FR_XENT_EXP
#undef FR_XENT_LOG

int FR(fr_softmax_xent)(int n, int C, int n_threads, real *dz, double *loss, const real *z,
                        const int *y, const real *w, double scale, double *partials)
{
    if (n < 0 || C < 1) return FR_EBADDIMS;
    for (int r = 0; r < n; r++)
        if (y[r] < 0 || y[r] >= C) return FR_EBADDIMS;
    const int nb = (n + FR_XENT_BLOCK - 1) / FR_XENT_BLOCK;
    const int nt = fr_team_for(n_threads, (double)n * C, FR_XENT_MIN_WORK, nb);
    const real s = (real)scale;
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int j = 0; j < nb; j++) {
        const int r0 = j * FR_XENT_BLOCK, r1 = n - r0 < FR_XENT_BLOCK ? n : r0 + FR_XENT_BLOCK;
        double acc = 0;
        FR_NOTE_TEAM();
        for (int r = r0; r < r1; r++)
            acc += FR(xent_row)(C, z + (size_t)r * C, y[r], w ? w[r] : (real)1, s,
                                dz ? dz + (size_t)r * C : NULL);
        partials[j] = acc;
    }
    double total = 0;
    for (int j = 0; j < nb; j++) total += partials[j];
    *loss = total;
    return FR_OK;
}

#endif /* template body */
