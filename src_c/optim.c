/* optim.c — gradient clipping by global norm and the optimizer step (SGD with momentum
   and Nesterov, Adam, AdamW, RMSprop) over every parameter array of a model in ONE call
   (template, see instantiate.h; declared in optim.h).

   Why: the Python loop over parameters (numpy temporaries for each formula, one call
   per array) cost a third of a small training step; here each element is read and
   written once.

   Exactness: each formula is written as fastrnn/optim.py writes it, operation by
   operation, in the array's own type with the Python scalars rounded to it first (as
   numpy 2 does for a Python float times a float32 array), so the result is the same
   bits numpy gives. gcc would contract a*b+c into FMAs in an AVX-512 clone and change
   the last bit, so contraction is off here. Denormals are not
   flushed either (numpy does not flush them). The update loops are cloned for AVX-512
   (16 lanes of IEEE division and square root; the same bits) with FMA contraction
   switched off for them (FR_OPT_CLONES).

   Threads: the arrays are cut into blocks of FR_OPT_BLOCK elements. The squared norm is
   one double partial per block (8 interleaved accumulators, in a fixed order) and the
   partials are added in block order, so the norm, and with it every result, has the
   same bits for any thread count; the update is elementwise. */
#ifndef FR_TEMPLATE
#include "threads.h"
#include "optim.h"
#define FR_TEMPLATE "optim.c"
#include "instantiate.h"
#else

#if FR_IS_FLOAT
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(FR_NO_CLONES)
#define FR_OPT_CLONES __attribute__((target_clones("avx512f", "default"), \
                                     optimize("fp-contract=off")))
#else
#define FR_OPT_CLONES
#endif
#define FR_OPT_BLOCK 8192
/* elements per thread below which threads do not pay. At 65536 the ~70,000 parameters
   of an LSTM of hidden 128 (Adam, clipped) took one thread, 66-89 us a step (the update
   streams 7 arrays: memory-bound on one core); at 16384 two, 45-57 us */
#define FR_OPT_MIN_WORK 16384.0

static int64_t fr_opt_blocks(int64_t n) { return (n + FR_OPT_BLOCK - 1) / FR_OPT_BLOCK; }

size_t fr_optim_workspace(int n_arrays, const fr_optim_array *a)
{
    int64_t nb = 0;
    for (int i = 0; i < n_arrays; i++) nb += fr_opt_blocks(a[i].n);
    return (size_t)(nb > 0 ? nb : 1);
}

static int fr_opt_check(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a)
{
    if (n_arrays < 0 || h->kind < FR_OPT_SGD || h->kind > FR_OPT_RMSPROP) return 0;
    for (int i = 0; i < n_arrays; i++) {
        const fr_optim_array *x = &a[i];
        if (x->n < 0 || (x->n > 0 && !x->g)) return 0;
        if (!x->p || x->n == 0) continue;
        int need1 = h->kind != FR_OPT_SGD || h->momentum != 0;
        int need2 = h->kind == FR_OPT_ADAM || h->kind == FR_OPT_ADAMW
                    || (h->kind == FR_OPT_RMSPROP && h->momentum != 0);
        if ((need1 && !x->s1) || (need2 && !x->s2)) return 0;
    }
    return 1;
}
#define FR_SQRT sqrtf
#else
#define FR_SQRT sqrt
#endif

/* sum of g[lo..hi)^2 in double: 8 accumulators over k mod 8, added in a fixed order */
static double FR(opt_sumsq)(const real *restrict g, int64_t lo, int64_t hi)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = lo;
    for (; k + 8 <= hi; k += 8)
        for (int j = 0; j < 8; j++) {
            const double x = (double)g[k + j];
            acc[j] += x * x;
        }
    for (int j = 0; k < hi; k++, j++) {
        const double x = (double)g[k];
        acc[j] += x * x;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* g[lo..hi) *= scale, as numpy's `g *= coef` */
FR_OPT_CLONES static void FR(opt_scale)(real *restrict g, int64_t lo, int64_t hi, real scale)
{
    for (int64_t k = lo; k < hi; k++) g[k] = g[k] * scale;
}

/* SGD (optim.SGD._update):  g = g + wd p;  b = g (first) or b = m b + g;
   g = g + m b (nesterov) or g = b;  p = p - lr g */
FR_OPT_CLONES static void FR(opt_sgd)(const fr_optim_hyper *h, const fr_optim_array *a, int64_t lo,
                        int64_t hi)
{
    real *restrict p = a->p, *restrict b = a->s1;
    const real *restrict g = a->g;
    const real lr = (real)h->lr, wd = (real)h->weight_decay, mom = (real)h->momentum;
    const int use_wd = h->weight_decay != 0, use_mom = h->momentum != 0;
    for (int64_t k = lo; k < hi; k++) {
        real gk = g[k];
        if (use_wd) gk = gk + wd * p[k];
        if (use_mom) {
            const real bk = a->first ? gk : b[k] * mom + gk;
            b[k] = bk;
            gk = h->nesterov ? gk + mom * bk : bk;
        }
        p[k] = p[k] - lr * gk;
    }
}

/* Adam / AdamW (optim.Adam._update):  AdamW: p = p * (1 - lr wd); Adam: g = g + wd p;
   m = m + (1 - b1)(g - m);  v = v b2;  v = v + ((1 - b2) g) g;
   p = p - c1 (m / (sqrt(v) / c2 + eps)) */
FR_OPT_CLONES static void FR(opt_adam)(const fr_optim_hyper *h, const fr_optim_array *a, int64_t lo,
                         int64_t hi)
{
    real *restrict p = a->p, *restrict m = a->s1, *restrict v = a->s2;
    const real *restrict g = a->g;
    const real wd = (real)h->weight_decay, decay = (real)(1 - h->lr * h->weight_decay);
    const real b1c = (real)(1 - h->beta1), b2 = (real)h->beta2, b2c = (real)(1 - h->beta2);
    const real c1 = (real)a->c1, c2 = (real)a->c2, eps = (real)h->eps;
    const int decoupled = h->kind == FR_OPT_ADAMW, use_wd = h->weight_decay != 0;
    for (int64_t k = lo; k < hi; k++) {
        real gk = g[k], pk = p[k];
        if (use_wd) {
            if (decoupled) pk = pk * decay;
            else gk = gk + wd * pk;
        }
        const real mk = m[k] + b1c * (gk - m[k]);
        real vk = v[k] * b2;
        vk = vk + (b2c * gk) * gk;
        m[k] = mk;
        v[k] = vk;
        const real denom = FR_SQRT(vk) / c2 + eps;
        p[k] = pk - c1 * (mk / denom);
    }
}

/* RMSprop (optim.RMSprop._update):  g = g + wd p;  v = v a;  v = v + ((1 - a) g) g;
   u = g / (sqrt(v) + eps);  b = m b + u, u = b (momentum);  p = p - lr u */
FR_OPT_CLONES static void FR(opt_rmsprop)(const fr_optim_hyper *h, const fr_optim_array *a, int64_t lo,
                            int64_t hi)
{
    real *restrict p = a->p, *restrict v = a->s1, *restrict b = a->s2;
    const real *restrict g = a->g;
    const real lr = (real)h->lr, wd = (real)h->weight_decay, mom = (real)h->momentum;
    const real al = (real)h->alpha, alc = (real)(1 - h->alpha), eps = (real)h->eps;
    const int use_wd = h->weight_decay != 0, use_mom = h->momentum != 0;
    for (int64_t k = lo; k < hi; k++) {
        real gk = g[k];
        if (use_wd) gk = gk + wd * p[k];
        real vk = v[k] * al;
        vk = vk + (alc * gk) * gk;
        v[k] = vk;
        real u = gk / (FR_SQRT(vk) + eps);
        if (use_mom) {
            u = b[k] * mom + u;
            b[k] = u;
        }
        p[k] = p[k] - lr * u;
    }
}

static void FR(opt_update)(const fr_optim_hyper *h, const fr_optim_array *a, int64_t lo,
                           int64_t hi)
{
    switch (h->kind) {
    case FR_OPT_SGD: FR(opt_sgd)(h, a, lo, hi); break;
    case FR_OPT_ADAM:
    case FR_OPT_ADAMW: FR(opt_adam)(h, a, lo, hi); break;
    default: FR(opt_rmsprop)(h, a, lo, hi); break;
    }
}

int FR(fr_optim_step)(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a,
                      double max_norm, int n_threads, double *ws, double *total_norm)
{
    if (!fr_opt_check(h, n_arrays, a)) return FR_EBADDIMS;
    int64_t total_n = 0, nb = 0;
    for (int i = 0; i < n_arrays; i++) {
        total_n += a[i].n;
        nb += fr_opt_blocks(a[i].n);
    }
    const int clip = max_norm > 0;
    const int nt = fr_team_for(n_threads, (double)total_n, FR_OPT_MIN_WORK,
                               nb > 0x7fffffff ? 0x7fffffff : (int)nb);
    double total = -1, coef = 1;
    int scale = 0;
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        FR_NOTE_TEAM();
        if (clip) {
            int64_t base = 0;
            for (int i = 0; i < n_arrays; i++) {
                const int64_t nbi = fr_opt_blocks(a[i].n);
                const real *g = a[i].g;
#pragma omp for schedule(static) nowait
                for (int64_t j = 0; j < nbi; j++) {
                    const int64_t lo = j * FR_OPT_BLOCK;
                    const int64_t hi = a[i].n - lo < FR_OPT_BLOCK ? a[i].n : lo + FR_OPT_BLOCK;
                    ws[base + j] = FR(opt_sumsq)(g, lo, hi);
                }
                base += nbi;
            }
#pragma omp barrier
#pragma omp single
            {
                double sum = 0;
                for (int64_t j = 0; j < nb; j++) sum += ws[j];
                total = sqrt(sum);
                coef = max_norm / (total + 1e-6);
                scale = isfinite(total) && coef < 1.0;
            }   /* implicit barrier: every thread sees total, coef, scale */
        }
        const real c = (real)coef;
        for (int i = 0; i < n_arrays; i++) {
            const int64_t nbi = fr_opt_blocks(a[i].n);
#pragma omp for schedule(static) nowait
            for (int64_t j = 0; j < nbi; j++) {
                const int64_t lo = j * FR_OPT_BLOCK;
                const int64_t hi = a[i].n - lo < FR_OPT_BLOCK ? a[i].n : lo + FR_OPT_BLOCK;
                if (scale) FR(opt_scale)(a[i].g, lo, hi, c);
                if (a[i].p) FR(opt_update)(h, &a[i], lo, hi);
            }
        }
    }
    *total_norm = total;
    return FR_OK;
}
#undef FR_SQRT
#endif
