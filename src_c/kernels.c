/* kernels.c — packed float32 GEMM micro-kernel (AVX-512, runtime-dispatched); see kernels.h.

   C = A . Bp: the output is cut into panels of NR = 32 columns (two zmm vectors) and
   blocks of MR = 8 rows; for each (block, panel) 16 accumulators stay in registers over
   the whole inner dimension: per k, two vector loads of the panel and eight broadcasts
   of A feed 16 FMAs. Written with GCC vector extensions under a target attribute, so
   the file builds with baseline x86-64 flags and the AVX-512 code runs only where the
   CPU check allows it. */
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include "kernels.h"

int fr_avx512 = 0;

#define FR_MR 8

/* Whether n values hold no NaN or infinity: an OR over "exponent all ones" of each
   value's bits (integer work the compiler vectorizes; no floating-point exceptions). */
int fr_all_finite_f32(const float *x, size_t n)
{
    const uint32_t *u = (const uint32_t *)x;
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

int fr_all_finite_f64(const double *x, size_t n)
{
    const uint64_t *u = (const uint64_t *)x;
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= (u[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    return !bad;
}

size_t fr_packed_size(int n, int k) { return (size_t)((n + FR_NR - 1) / FR_NR) * FR_NR * k; }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FR_NO_AVX512)
#define FR_HAVE_KERNEL 1
#include <immintrin.h>

typedef float fr_v16 __attribute__((vector_size(64), aligned(4), may_alias));

/* FASTRNN_PORTABLE=1 turns the AVX-512 code off: the tests use it to run the portable
   paths on this machine too. */
int fr_kernel_available(void)
{
    const char *env = getenv("FASTRNN_PORTABLE");
    if (env && env[0] && strcmp(env, "0") != 0) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* decided once, when the library loads, so a process never mixes the two paths */
__attribute__((constructor)) static void fr_avx512_init(void)
{
    fr_avx512 = fr_kernel_available();
}

#define FR_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))

/* dst[q*ldd + j] = src[j*lds + q] for j, q < 16: a 16x16 transpose in registers */
static FR_AVX512 void fr_transpose16_avx512(const float *src, size_t lds, float *dst, size_t ldd)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (size_t)i * ldd, r[i]);   /* column i */
}

/* One panel: rows [col0, col0+nc) of W (each k1 long, ld ldw) into columns of dst
   (k1 x NR, ld NR): the per-call repacking of the weights, so it is transposed 16x16
   in registers (element by element it took half of a batch-1 call's time). */
static FR_AVX512 void fr_pack_panel_rows_avx512(float *dst, const float *w, int ldw, int col0,
                                                int nc, int k1)
{
    int kk = 0;
    if (nc == FR_NR)
        for (; kk + 16 <= k1; kk += 16)
            for (int h = 0; h < FR_NR; h += 16)
                fr_transpose16_avx512(w + (size_t)(col0 + h) * ldw + kk, (size_t)ldw,
                               dst + (size_t)kk * FR_NR + h, FR_NR);
    for (int j = 0; j < FR_NR; j++) {
        const float *src = w + (size_t)(col0 + j) * ldw;
        for (int q = kk; q < k1; q++) dst[(size_t)q * FR_NR + j] = j < nc ? src[q] : 0.0f;
    }
}

/* one MR x NR tile; mr is a compile-time constant at every call site */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_tile(const int mr, int k, const float *a, size_t sai, size_t sak, const float *bp,
        size_t ldb, int accumulate, float *c, int ldc, int nc)
{
    fr_v16 acc0[FR_MR], acc1[FR_MR];
    for (int i = 0; i < mr; i++) { acc0[i] = (fr_v16){0}; acc1[i] = (fr_v16){0}; }
    for (int kk = 0; kk < k; kk++) {
        const fr_v16 b0 = *(const fr_v16 *)(bp + (size_t)kk * ldb);
        const fr_v16 b1 = *(const fr_v16 *)(bp + (size_t)kk * ldb + 16);
        for (int i = 0; i < mr; i++) {
            const float av = a[(size_t)i * sai + (size_t)kk * sak];
            acc0[i] += av * b0;
            acc1[i] += av * b1;
        }
    }
    if (nc == FR_NR) {
        for (int i = 0; i < mr; i++) {
            fr_v16 *c0 = (fr_v16 *)(c + (size_t)i * ldc), *c1 = (fr_v16 *)(c + (size_t)i * ldc + 16);
            if (accumulate) { *c0 += acc0[i]; *c1 += acc1[i]; }
            else { *c0 = acc0[i]; *c1 = acc1[i]; }
        }
    } else {
        for (int i = 0; i < mr; i++) {
            float tmp[FR_NR];
            memcpy(tmp, &acc0[i], 64);
            memcpy(tmp + 16, &acc1[i], 64);
            float *ci = c + (size_t)i * ldc;
            for (int j = 0; j < nc; j++) ci[j] = accumulate ? ci[j] + tmp[j] : tmp[j];
        }
    }
}

/* All tiles of rows [0, m) against one panel of nc <= NR columns; A element (i, kk) at
   a[i*sai + kk*sak], panel row kk at bp + kk*ldb. */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_rows(int m, int k, const float *a, size_t sai, size_t sak, const float *bp, size_t ldb,
        int accumulate, float *c, int ldc, int nc)
{
    int i = 0;
    for (; i + FR_MR <= m; i += FR_MR)
        fr_tile(FR_MR, k, a + (size_t)i * sai, sai, sak, bp, ldb, accumulate,
                c + (size_t)i * ldc, ldc, nc);
    const float *ai = a + (size_t)i * sai;
    float *ci = c + (size_t)i * ldc;
    switch (m - i) {   /* remainder rows, each with its own unrolled tile */
    case 7: fr_tile(7, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 6: fr_tile(6, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 5: fr_tile(5, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 4: fr_tile(4, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 3: fr_tile(3, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 2: fr_tile(2, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    case 1: fr_tile(1, k, ai, sai, sak, bp, ldb, accumulate, ci, ldc, nc); break;
    default: break;
    }
}

/* mr (< 4) rows against four full panels at once: with one or two rows a single panel
   leaves only 2-4 FMA chains, and the FMA latency, not the loads, would set the pace. */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_tile_few(const int mr, int k, const float *a, int lda, const float *bp, int accumulate,
            float *c, int ldc)
{
    fr_v16 acc[3][8];
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 8; q++) acc[i][q] = (fr_v16){0};
    const size_t ps = (size_t)FR_NR * k;          /* distance between panels */
    for (int kk = 0; kk < k; kk++) {
        fr_v16 b[8];
        for (int q = 0; q < 8; q++)
            b[q] = *(const fr_v16 *)(bp + (q >> 1) * ps + (size_t)kk * FR_NR + (q & 1) * 16);
        for (int i = 0; i < mr; i++) {
            const float av = a[(size_t)i * lda + kk];
            for (int q = 0; q < 8; q++) acc[i][q] += av * b[q];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 8; q++) {
            fr_v16 *cq = (fr_v16 *)(c + (size_t)i * ldc + (q >> 1) * FR_NR + (q & 1) * 16);
            if (accumulate) *cq += acc[i][q];
            else *cq = acc[i][q];
        }
}

static FR_AVX512 void fr_gemm_packed_avx512(int m, int n, int k, const float *a, int lda,
                                            const float *bp, int accumulate, float *c,
                                            int ldc)
{
    const int np = (n + FR_NR - 1) / FR_NR;
    int p0 = 0;
    if (m < 4) {
        for (; p0 + 4 <= n / FR_NR; p0 += 4) {
            const float *bpp = bp + (size_t)p0 * FR_NR * k;
            float *cp = c + p0 * FR_NR;
            switch (m) {
            case 3: fr_tile_few(3, k, a, lda, bpp, accumulate, cp, ldc); break;
            case 2: fr_tile_few(2, k, a, lda, bpp, accumulate, cp, ldc); break;
            case 1: fr_tile_few(1, k, a, lda, bpp, accumulate, cp, ldc); break;
            default: break;
            }
        }
    }
    for (int p = p0; p < np; p++) {
        const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        fr_rows(m, k, a, (size_t)lda, 1, bp + (size_t)p * FR_NR * k, FR_NR, accumulate,
                c + p * FR_NR, ldc, nc);
    }
}

void fr_gemm_packed(int m, int n, int k, const float *a, int lda, const float *bp,
                    int accumulate, float *c, int ldc)
{
    fr_gemm_packed_avx512(m, n, k, a, lda, bp, accumulate, c, ldc);
}

/* mr (< 4) rows against two full panels: four FMA chains per row, enough at the pace L2
   delivers a panel (the m = 1 products of a recurrence are bound by it). */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_tile_pair(const int mr, int k, const float *a, int lda, const float *bp, float *c, int ldc)
{
    fr_v16 acc[3][4];
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = (fr_v16){0};
    const size_t ps = (size_t)FR_NR * k;
    for (int kk = 0; kk < k; kk++) {
        fr_v16 b[4];
        for (int q = 0; q < 4; q++)
            b[q] = *(const fr_v16 *)(bp + (q >> 1) * ps + (size_t)kk * FR_NR + (q & 1) * 16);
        for (int i = 0; i < mr; i++) {
            const float av = a[(size_t)i * lda + kk];
            for (int q = 0; q < 4; q++) acc[i][q] += av * b[q];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++)
            *(fr_v16 *)(c + (size_t)i * ldc + (q >> 1) * FR_NR + (q & 1) * 16) = acc[i][q];
}

/* fr_gemm_packed for m < 4 rows and whole panels, two panels at a time, from the first
   to the last or (backward) from the last to the first. */
static FR_AVX512 void fr_gemm_packed_alt_avx512(int m, int n, int k, const float *a, int lda,
                                                const float *bp, float *c, int ldc,
                                                int backward)
{
    const int np = n / FR_NR, ngroups = (np + 1) / 2;     /* pairs, then an odd panel */
    for (int s = 0; s < ngroups; s++) {
        const int q = backward ? ngroups - 1 - s : s, p = 2 * q;
        const float *bpp = bp + (size_t)p * FR_NR * k;
        float *cp = c + p * FR_NR;
        if (p + 1 == np)
            fr_rows(m, k, a, (size_t)lda, 1, bpp, FR_NR, 0, cp, ldc, FR_NR);
        else if (m == 3)
            fr_tile_pair(3, k, a, lda, bpp, cp, ldc);
        else if (m == 2)
            fr_tile_pair(2, k, a, lda, bpp, cp, ldc);
        else
            fr_tile_pair(1, k, a, lda, bpp, cp, ldc);
    }
}

void fr_gemm_packed_alt(int m, int n, int k, const float *a, int lda, const float *bp,
                        float *c, int ldc, int backward)
{
    /* a pair of panels must fit in L1 for the turn to find it there (k <= 128) */
    if (m >= 4 || n % FR_NR != 0 || k > 128)
        fr_gemm_packed_avx512(m, n, k, a, lda, bp, 0, c, ldc);
    else
        fr_gemm_packed_alt_avx512(m, n, k, a, lda, bp, c, ldc, backward);
}

/* C (m x n) (+)= A^T B with A (K x m) and B (K x n) row-major: the weight gradients
   dW = dG^T X, whose inner dimension runs over all (step, sample) rows. K goes in blocks
   of FR_KC; per block, each 8-row tile of C runs the panels of B (32 columns, read
   straight from B's rows) with its 16 accumulators; C gathers the blocks. Every element
   sums its K terms in ascending order, so the result does not depend on how callers
   split C. Tried and dropped: copying B's panels too, as a BLAS does (no faster; with
   A copied 32 columns at a time, 10-15% slower on every weight-gradient shape measured).
   One or two right-hand operands: C1 = A^T B1 and C2 = A^T B2 in one pass, each tile of A
   serving both (dW_hh = dG^T h_prev and dW_ih = dG^T x of one dG). */
#define FR_KC 128
typedef struct {
    int nops, n[2], ldb[2], ldc[2];
    const float *b[2];
    float *c[2];
} fr_tn_ops;

static int fr_tn_panels(const fr_tn_ops *o, int q)
{
    return (o->n[q] + FR_NR - 1) / FR_NR;
}

/* fr_gemm_tn's body (see above). Each tile of A (8 columns of kc rows, lda apart, often
   a power of two: a few L1 sets) is first copied to a contiguous 4 KB block that serves
   every panel (7-15% faster than reading it from A's rows for each panel); a partial
   last panel goes through a zero-padded copy made once per block of K, so vector loads
   stay inside B. */
static FR_AVX512 void fr_gemm_tn_direct_avx512(int m, int K, const float *a, int lda,
                                               const fr_tn_ops *o, int accumulate)
{
    float tail[2][FR_KC * FR_NR] __attribute__((aligned(64)));
    float apk[FR_KC * FR_MR] __attribute__((aligned(64)));
    for (int kb = 0; kb < K; kb += FR_KC) {
        const int kc = K - kb < FR_KC ? K - kb : FR_KC;
        const int acc = accumulate || kb > 0;
        const float *ak = a + (size_t)kb * lda;
        for (int q = 0; q < o->nops; q++) {     /* partial last panels, zero-padded */
            const int n = o->n[q], ldb = o->ldb[q], p = n / FR_NR, nc = n - p * FR_NR;
            const float *bk = o->b[q] + (size_t)kb * ldb + p * FR_NR;
            if (nc)
                for (int kk = 0; kk < kc; kk++) {
                    for (int j = 0; j < nc; j++) tail[q][kk * FR_NR + j] = bk[(size_t)kk * ldb + j];
                    for (int j = nc; j < FR_NR; j++) tail[q][kk * FR_NR + j] = 0.0f;
                }
        }
        for (int i = 0; i < m; i += FR_MR) {
            const int mr = m - i < FR_MR ? m - i : FR_MR;
            if (mr == FR_MR)
                for (int kk = 0; kk < kc; kk++)
                    _mm256_store_ps(apk + kk * FR_MR, _mm256_loadu_ps(ak + (size_t)kk * lda + i));
            else
                for (int kk = 0; kk < kc; kk++)
                    for (int r = 0; r < mr; r++) apk[kk * FR_MR + r] = ak[(size_t)kk * lda + i + r];
            for (int q = 0; q < o->nops; q++) {
                const int n = o->n[q], ldb = o->ldb[q], ldc = o->ldc[q];
                const int np = fr_tn_panels(o, q);
                const float *bk = o->b[q] + (size_t)kb * ldb;
                for (int p = 0; p < np; p++) {
                    const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
                    float *cp = o->c[q] + (size_t)i * ldc + p * FR_NR;
                    if (nc == FR_NR)
                        fr_rows(mr, kc, apk, 1, FR_MR, bk + p * FR_NR, (size_t)ldb, acc, cp,
                                ldc, nc);
                    else
                        fr_rows(mr, kc, apk, 1, FR_MR, tail[q], FR_NR, acc, cp, ldc, nc);
                }
            }
        }
    }
}

static FR_AVX512 void fr_gemm_tn_avx512(int m, int n, int K, const float *a, int lda,
                                        const float *b, int ldb, int accumulate, float *c,
                                        int ldc)
{
    if (n <= FR_NR / 2) {
        /* few columns (dW_ih with few inputs): a panel would be mostly padding, so
           compute C^T = B^T A (n rows against full panels of A) and add it transposed.
           Chosen by n alone: callers split m across threads. */
        float *ct = malloc(sizeof(float) * (size_t)n * m);
        if (ct) {
            const fr_tn_ops o = {1, {m, 0}, {lda, 0}, {m, 0}, {a, NULL}, {ct, NULL}};
            fr_gemm_tn_direct_avx512(n, K, b, ldb, &o, 0);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    c[(size_t)i * ldc + j] = accumulate ? c[(size_t)i * ldc + j] + ct[(size_t)j * m + i]
                                                        : ct[(size_t)j * m + i];
            free(ct);
            return;
        }
    }
    const fr_tn_ops o = {1, {n, 0}, {ldb, 0}, {ldc, 0}, {b, NULL}, {c, NULL}};
    fr_gemm_tn_direct_avx512(m, K, a, lda, &o, accumulate);
}

void fr_gemm_tn(int m, int n, int K, const float *a, int lda, const float *b, int ldb,
                int accumulate, float *c, int ldc)
{
    fr_gemm_tn_avx512(m, n, K, a, lda, b, ldb, accumulate, c, ldc);
}

static FR_AVX512 void fr_gemm_tn2_avx512(int m, int K, const float *a, int lda, int n1,
                                         const float *b1, int ldb1, float *c1, int ldc1,
                                         int n2, const float *b2, int ldb2, float *c2,
                                         int ldc2)
{
    const fr_tn_ops o = {2, {n1, n2}, {ldb1, ldb2}, {ldc1, ldc2}, {b1, b2}, {c1, c2}};
    fr_gemm_tn_direct_avx512(m, K, a, lda, &o, 0);
}

void fr_gemm_tn2(int m, int K, const float *a, int lda, int n1, const float *b1, int ldb1,
                 float *c1, int ldc1, int n2, const float *b2, int ldb2, float *c2, int ldc2)
{
    fr_gemm_tn2_avx512(m, K, a, lda, n1, b1, ldb1, c1, ldc1, n2, b2, ldb2, c2, ldc2);
}

/* C (m x n) (+)= A (m x k) W^T with W (n x k) unpacked, one dot product per element:
   16 lanes of FMAs over k (the tail masked), then a fixed reduction. Every element's
   sum is the same whatever m is, so a row's result never depends on the rows beside it
   (scipy's OpenBLAS picks other kernels, gemv at one row, by the row count). Four
   outputs at a time keep four independent FMA chains in flight. For few outputs (a
   classifier's head), where a packed 32-column panel would be mostly padding. */
static FR_AVX512 void fr_gemm_rowdot_avx512(int m, int n, int k, const float *a, int lda,
                                            const float *w, int ldw, int accumulate,
                                            float *c, int ldc)
{
    const int kf = k & ~15;
    const __mmask16 tail = (__mmask16)((1u << (k - kf)) - 1u);
    for (int i = 0; i < m; i++) {
        const float *ai = a + (size_t)i * lda;
        float *ci = c + (size_t)i * ldc;
        int j = 0;
        for (; j < n; j += 4) {
            const int nj = n - j < 4 ? n - j : 4;
            __m512 acc[4];
            const float *wj[4];
            for (int q = 0; q < 4; q++) {
                acc[q] = _mm512_setzero_ps();
                wj[q] = w + (size_t)(j + (q < nj ? q : 0)) * ldw;
            }
            for (int kk = 0; kk < kf; kk += 16) {
                const __m512 av = _mm512_loadu_ps(ai + kk);
                for (int q = 0; q < 4; q++)
                    acc[q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(wj[q] + kk), acc[q]);
            }
            if (tail) {
                const __m512 av = _mm512_maskz_loadu_ps(tail, ai + kf);
                for (int q = 0; q < 4; q++)
                    acc[q] = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(tail, wj[q] + kf), acc[q]);
            }
            for (int q = 0; q < nj; q++) {
                const float sum = _mm512_reduce_add_ps(acc[q]);
                ci[j + q] = accumulate ? ci[j + q] + sum : sum;
            }
        }
    }
}

void fr_gemm_rowdot(int m, int n, int k, const float *a, int lda, const float *w, int ldw,
                    int accumulate, float *c, int ldc)
{
    fr_gemm_rowdot_avx512(m, n, k, a, lda, w, ldw, accumulate, c, ldc);
}

/* fr_add_outer's body for I inputs: a block of KV vectors of acc's columns for all I
   rows stays in registers over the n rows (I * KV <= 16 accumulators, enough chains for
   the FMA latency), so each g row is read once per call and acc once per block. Every
   element still adds its rows' products in row order, one FMA each. */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_add_outer_body(const int I, const int KV, float *acc, const float *x, const size_t *xrow,
                  float *const *g, int n, int GH)
{
    for (int k = 0; k < GH; k += 16 * KV) {
        __mmask16 m[8];
        __m512 a[8][8];
        for (int v = 0; v < KV; v++) {
            const int left = GH - k - 16 * v;
            m[v] = left >= 16 ? (__mmask16)0xffff
                 : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        for (int i = 0; i < I; i++)
            for (int v = 0; v < KV; v++)
                a[i][v] = _mm512_maskz_loadu_ps(m[v], acc + (size_t)i * GH + k + 16 * v);
        for (int r = 0; r < n; r++) {
            const float *xr = x + xrow[r] * (size_t)I, *gr = g[r] + k;
            __m512 gv[8];
            for (int v = 0; v < KV; v++) gv[v] = _mm512_maskz_loadu_ps(m[v], gr + 16 * v);
            for (int i = 0; i < I; i++) {
                const __m512 xb = _mm512_set1_ps(xr[i]);
                for (int v = 0; v < KV; v++) a[i][v] = _mm512_fmadd_ps(xb, gv[v], a[i][v]);
            }
        }
        for (int i = 0; i < I; i++)
            for (int v = 0; v < KV; v++)
                _mm512_mask_storeu_ps(acc + (size_t)i * GH + k + 16 * v, m[v], a[i][v]);
    }
}

static FR_AVX512 void fr_add_outer_avx512(float *acc, const float *x, const size_t *xrow,
                                          float *const *g, int n, int I, int GH)
{
    switch (I) {
    case 1: fr_add_outer_body(1, 8, acc, x, xrow, g, n, GH); break;
    case 2: fr_add_outer_body(2, 8, acc, x, xrow, g, n, GH); break;
    case 3: fr_add_outer_body(3, 5, acc, x, xrow, g, n, GH); break;
    case 4: fr_add_outer_body(4, 4, acc, x, xrow, g, n, GH); break;
    case 5: fr_add_outer_body(5, 3, acc, x, xrow, g, n, GH); break;
    case 6: fr_add_outer_body(6, 2, acc, x, xrow, g, n, GH); break;
    case 7: fr_add_outer_body(7, 2, acc, x, xrow, g, n, GH); break;
    default: fr_add_outer_body(8, 2, acc, x, xrow, g, n, GH); break;
    }
}

int fr_add_outer_f32(float *acc, const float *x, const size_t *xrow, float *const *g,
                     int n, int I, int GH)
{
    if (!fr_avx512 || I < 1 || I > FR_ADD_OUTER_MAX_I) return 0;
    fr_add_outer_avx512(acc, x, xrow, g, n, I, GH);
    return 1;
}

#define fr_pack_panel_rows fr_pack_panel_rows_avx512   /* packing only runs with the kernel */
#else
int fr_add_outer_f32(float *acc, const float *x, const size_t *xrow, float *const *g,
                     int n, int I, int GH)
{
    (void)acc; (void)x; (void)xrow; (void)g; (void)n; (void)I; (void)GH;
    return 0;
}
int fr_kernel_available(void) { return 0; }
/* One panel: rows [col0, col0+nc) of W (each k1 long, ld ldw) into columns of dst
   (k1 x NR, ld NR). Reads each W row contiguously. */
static void fr_pack_panel_rows(float *dst, const float *w, int ldw, int col0, int nc, int k1)
{
    for (int j = 0; j < nc; j++) {
        const float *src = w + (size_t)(col0 + j) * ldw;
        for (int kk = 0; kk < k1; kk++) dst[(size_t)kk * FR_NR + j] = src[kk];
    }
    for (int j = nc; j < FR_NR; j++)
        for (int kk = 0; kk < k1; kk++) dst[(size_t)kk * FR_NR + j] = 0.0f;
}

void fr_gemm_tn(int m, int n, int K, const float *a, int lda, const float *b, int ldb,
                int accumulate, float *c, int ldc)
{
    (void)m; (void)n; (void)K; (void)a; (void)lda; (void)b; (void)ldb; (void)accumulate;
    (void)c; (void)ldc;
}
void fr_gemm_tn2(int m, int K, const float *a, int lda, int n1, const float *b1, int ldb1,
                 float *c1, int ldc1, int n2, const float *b2, int ldb2, float *c2, int ldc2)
{
    (void)m; (void)K; (void)a; (void)lda; (void)n1; (void)b1; (void)ldb1; (void)c1;
    (void)ldc1; (void)n2; (void)b2; (void)ldb2; (void)c2; (void)ldc2;
}
void fr_gemm_rowdot(int m, int n, int k, const float *a, int lda, const float *w, int ldw,
                    int accumulate, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)w; (void)ldw; (void)accumulate;
    (void)c; (void)ldc;
}
void fr_gemm_packed_alt(int m, int n, int k, const float *a, int lda, const float *bp,
                        float *c, int ldc, int backward)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)bp; (void)c; (void)ldc; (void)backward;
}
void fr_gemm_packed(int m, int n, int k, const float *a, int lda, const float *bp,
                    int accumulate, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)bp; (void)accumulate; (void)c; (void)ldc;
}
#endif

void fr_pack_wt(float *bp, const float *w, int n, int k, int ldw)
{
    const int np = (n + FR_NR - 1) / FR_NR;
    for (int p = 0; p < np; p++) {
        const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        fr_pack_panel_rows(bp + (size_t)p * FR_NR * k, w, ldw, p * FR_NR, nc, k);
    }
}

void fr_pack_wt2(float *bp, const float *w1, int k1, int ld1, const float *w2, int k2,
                 int ld2, int n)
{
    const int np = (n + FR_NR - 1) / FR_NR, k = k1 + k2;
    for (int p = 0; p < np; p++) {
        const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        float *dst = bp + (size_t)p * FR_NR * k;
        fr_pack_panel_rows(dst, w1, ld1, p * FR_NR, nc, k1);
        fr_pack_panel_rows(dst + (size_t)k1 * FR_NR, w2, ld2, p * FR_NR, nc, k2);
    }
}

void fr_pack_w(float *bp, const float *w, int k, int n, int ldw)
{
    const int np = (n + FR_NR - 1) / FR_NR;
    for (int p = 0; p < np; p++) {
        float *dst = bp + (size_t)p * FR_NR * k;
        const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        for (int kk = 0; kk < k; kk++) {
            memcpy(dst + (size_t)kk * FR_NR, w + (size_t)kk * ldw + p * FR_NR,
                   sizeof(float) * nc);
            for (int j = nc; j < FR_NR; j++) dst[(size_t)kk * FR_NR + j] = 0.0f;
        }
    }
}
