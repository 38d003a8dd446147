/* dense.c — the affine output head over rows, forward and backward (template, see
   instantiate.h), so a training step never goes through numpy's own BLAS (whose threads
   spin after every numpy matmul and halve the speed of the OpenMP core around them).

   Legend: n = rows (every leading axis flattened), k = in_features, m = out_features.
     forward   y (n,m) = x (n,k) w^T + b,             w (m,k), b (m)
     backward  dx (n,k) = dy w                         (written; skipped when dx is NULL)
               dw (m,k) += dy^T x,  db (m) += sum_rows dy
   Threads: rows are cut into blocks of FR_DENSE_BLOCK and the weight-gradient sum into
   segments of rows fixed by n alone (one partial per segment, added in segment order),
   so results are bitwise the same for any thread count; each piece calls
   single-threaded BLAS (the caller holds scipy's BLAS to one thread), or for float32 on
   AVX-512 fastrnn's own kernels (kernels.h). Not here: shapes of the Python arrays,
   dtype conversion (fastrnn/dense.py, fastrnn/_core.pyx). */
#ifndef FR_TEMPLATE
#include <stdint.h>
#include "kernels.h"
#include "threads.h"
#define FR_TEMPLATE "dense.c"
#include "instantiate.h"
#else

#if FR_IS_FLOAT
#define FR_DENSE_BLOCK 256          /* rows per block of the forward and of dx */
#define FR_DENSE_SEG_ROWS 1024      /* rows per weight-gradient segment at least */
#define FR_DENSE_SEG_MAX 8
#define FR_DENSE_MIN_WORK 1.6e7     /* multiply-adds per thread below which threads do not pay */
#define FR_DENSE_ALIGN 16           /* elements: 64 bytes of float */

static size_t fr_dense_round(size_t n) { return (n + FR_DENSE_ALIGN - 1) / FR_DENSE_ALIGN * FR_DENSE_ALIGN; }
static size_t fr_dense_mul(size_t a, size_t b) { return (b && a > (size_t)-1 / b) ? 0 : a * b; }

static int fr_dense_nseg(int n)
{
    int s = n / FR_DENSE_SEG_ROWS;
    return s < 1 ? 1 : (s > FR_DENSE_SEG_MAX ? FR_DENSE_SEG_MAX : s);
}

static int fr_dense_dims_ok(int n, int k, int m)
{
    return n >= 0 && k >= 1 && m >= 1;
}

size_t fr_dense_workspace(int n, int k, int m)
{
    if (!fr_dense_dims_ok(n, k, m)) return 0;
    const size_t nseg = (size_t)fr_dense_nseg(n);
    size_t part = fr_dense_mul(fr_dense_mul(nseg, (size_t)m), (size_t)k + 1);
    size_t pk = fr_packed_size(m, k) + fr_packed_size(k, m);
    if (!part || !pk) return 0;
    return FR_DENSE_ALIGN + fr_dense_round(pk) + fr_dense_round(part);
}
#endif /* FR_IS_FLOAT */

static real *FR(dense_aligned)(real *ws)
{
    const uintptr_t a = (uintptr_t)ws, r = (a + 63) & ~(uintptr_t)63;
    return (real *)(void *)((char *)ws + (r - a));
}

/* row-major C (mr x nc) = A (mr x kk) op(B) + beta C through column-major BLAS (swapped) */
static void FR(dense_gemm)(gemm_t gemm, int ta, int tb, int mr, int nc, int kk,
                           const real *A, int lda, const real *B, int ldb, real beta,
                           real *C, int ldc)
{
    char cta = ta ? 'T' : 'N', ctb = tb ? 'T' : 'N';
    real one = 1;
    gemm(&ctb, &cta, &nc, &mr, &kk, &one, (real *)B, &ldb, (real *)A, &lda, &beta, C, &ldc);
}

FR_CLONES static void FR(dense_add)(real *restrict acc, const real *restrict x, int len)
{
    for (int j = 0; j < len; j++) acc[j] += x[j];
}

int FR(fr_dense_forward)(int n, int k, int m, int n_threads, real *y, const real *x,
                         const real *w, const real *b, real *ws, gemm_t gemm)
{
    if (!fr_dense_dims_ok(n, k, m)) return FR_EBADDIMS;
    if (n == 0) return FR_OK;
    const float *pk = NULL;
#if FR_IS_FLOAT
    /* the kernel's panels are NR = 32 outputs wide: for a few outputs (a classifier's
       head) most of each panel would be padding; fr_gemm_rowdot serves those */
    if (fr_avx512 && m >= FR_NR / 2) {      /* w^T packed once per call */
        float *p = FR(dense_aligned)(ws);
        fr_pack_wt(p, w, m, k, k);
        pk = p;
    }
#else
    (void)ws;
#endif
    const int nb = (n + FR_DENSE_BLOCK - 1) / FR_DENSE_BLOCK;
    const int nt = fr_team_for(n_threads, (double)n * k * m, FR_DENSE_MIN_WORK, nb);
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int j = 0; j < nb; j++) {
        const int r0 = j * FR_DENSE_BLOCK, nr = n - r0 < FR_DENSE_BLOCK ? n - r0 : FR_DENSE_BLOCK;
        real *yb = y + (size_t)r0 * m;
        FR_NOTE_TEAM();
        for (int r = 0; r < nr; r++) memcpy(yb + (size_t)r * m, b, sizeof(real) * m);
#if FR_IS_FLOAT
        if (pk) { fr_gemm_packed(nr, m, k, x + (size_t)r0 * k, k, pk, 1, yb, m); continue; }
        /* few outputs: not BLAS, whose result for a row depends on how many rows come
           with it (gemv for one): a sequence's prediction must not depend on its batch,
           and a stream (stream.c) runs the head on one step's rows */
        if (fr_avx512) { fr_gemm_rowdot(nr, m, k, x + (size_t)r0 * k, k, w, k, 1, yb, m); continue; }
#endif
        FR(dense_gemm)(gemm, 0, 1, nr, m, k, x + (size_t)r0 * k, k, w, k, 1, yb, m);
    }
    (void)pk;
    return FR_OK;
}

int FR(fr_dense_backward)(int n, int k, int m, int n_threads, real *dx, real *dw, real *db,
                          const real *dy, const real *x, const real *w, real *ws,
                          gemm_t gemm)
{
    if (!fr_dense_dims_ok(n, k, m)) return FR_EBADDIMS;
    if (n == 0) return FR_OK;
    real *base = FR(dense_aligned)(ws);
    real *part_w = base + fr_dense_round(fr_packed_size(m, k) + fr_packed_size(k, m));
    const int nseg = fr_dense_nseg(n), segr = (n + nseg - 1) / nseg;
    real *part_b = part_w + (size_t)nseg * m * k;      /* (nseg, m) after (nseg, m, k) */
    const float *pk = NULL;
#if FR_IS_FLOAT
    const int kernel = fr_avx512;
    if (kernel && dx) {                                 /* w packed for dx = dy w */
        float *p = base;
        fr_pack_w(p, w, m, k, k);
        pk = p;
    }
#endif
    const int nrb = dx ? (n + FR_DENSE_BLOCK - 1) / FR_DENSE_BLOCK : 0;
    const int nt = fr_team_for(n_threads, (double)n * k * m * (dx ? 2 : 1), FR_DENSE_MIN_WORK, nseg + nrb);
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        FR_NOTE_TEAM();
#pragma omp for schedule(dynamic, 1)
        for (int q = 0; q < nseg + nrb; q++) {
            if (q < nseg) {                             /* partials of rows [r0, r0 + nr) */
                const int r0 = q * segr, nr = n - r0 < segr ? n - r0 : segr;
                real *pw = part_w + (size_t)q * m * k, *pb = part_b + (size_t)q * m;
                const real *dys = dy + (size_t)r0 * m;
                if (nr <= 0) {
                    memset(pw, 0, sizeof(real) * m * k);
                    memset(pb, 0, sizeof(real) * m);
                    continue;
                }
#if FR_IS_FLOAT
                if (kernel) fr_gemm_tn(m, k, nr, dys, m, x + (size_t)r0 * k, k, 0, pw, k);
                else
#endif
                FR(dense_gemm)(gemm, 1, 0, m, k, nr, dys, m, x + (size_t)r0 * k, k, 0, pw, k);
                memcpy(pb, dys, sizeof(real) * m);
                for (int r = 1; r < nr; r++) FR(dense_add)(pb, dys + (size_t)r * m, m);
            } else {                                    /* dx of a block of rows */
                const int r0 = (q - nseg) * FR_DENSE_BLOCK;
                const int nr = n - r0 < FR_DENSE_BLOCK ? n - r0 : FR_DENSE_BLOCK;
#if FR_IS_FLOAT
                if (pk) {
                    fr_gemm_packed(nr, k, m, dy + (size_t)r0 * m, m, pk, 0, dx + (size_t)r0 * k, k);
                    continue;
                }
#endif
                FR(dense_gemm)(gemm, 0, 0, nr, k, m, dy + (size_t)r0 * m, m, w, k, 0,
                               dx + (size_t)r0 * k, k);
            }
        }
        /* implicit barrier: every partial is written; add them in segment order */
#pragma omp for schedule(static) nowait
        for (int g = 0; g < m; g++)
            for (int s = 0; s < nseg; s++)
                FR(dense_add)(dw + (size_t)g * k, part_w + ((size_t)s * m + g) * k, k);
#pragma omp single nowait
        for (int s = 0; s < nseg; s++) FR(dense_add)(db, part_b + (size_t)s * m, m);
    }
    (void)pk;
    return FR_OK;
}

#endif /* template body */
