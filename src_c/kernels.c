/* kernels.c — packed float32 GEMM micro-kernel (AVX-512, runtime-dispatched); see kernels.h.

   C = A . Bp: the output is cut into panels of NR = 32 columns (two zmm vectors) and
   blocks of MR = 8 rows; for each (block, panel) 16 accumulators stay in registers over
   the whole inner dimension: per k, two vector loads of the panel and eight broadcasts
   of A feed 16 FMAs. Written with GCC vector extensions under a target attribute, so
   the file builds with baseline x86-64 flags and the AVX-512 code runs only where the
   CPU check allows it. */
#include <string.h>
#include "kernels.h"

#define FR_MR 8

size_t fr_packed_size(int n, int k) { return (size_t)((n + FR_NR - 1) / FR_NR) * FR_NR * k; }

void fr_pack_wt(float *bp, const float *w, int n, int k, int ldw)
{
    const int np = (n + FR_NR - 1) / FR_NR;
    for (int p = 0; p < np; p++) {
        float *dst = bp + (size_t)p * FR_NR * k;
        for (int kk = 0; kk < k; kk++)
            for (int j = 0; j < FR_NR; j++) {
                const int col = p * FR_NR + j;
                dst[(size_t)kk * FR_NR + j] = col < n ? w[(size_t)col * ldw + kk] : 0.0f;
            }
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

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FR_NO_AVX512)
#define FR_HAVE_KERNEL 1

typedef float fr_v16 __attribute__((vector_size(64), aligned(4), may_alias));

int fr_kernel_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define FR_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))

/* one MR x NR tile; mr is a compile-time constant at every call site */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_tile(const int mr, int k, const float *a, int lda, const float *bp, int accumulate,
        float *c, int ldc, int nc)
{
    fr_v16 acc0[FR_MR], acc1[FR_MR];
    for (int i = 0; i < mr; i++) { acc0[i] = (fr_v16){0}; acc1[i] = (fr_v16){0}; }
    for (int kk = 0; kk < k; kk++) {
        const fr_v16 b0 = *(const fr_v16 *)(bp + (size_t)kk * FR_NR);
        const fr_v16 b1 = *(const fr_v16 *)(bp + (size_t)kk * FR_NR + 16);
        for (int i = 0; i < mr; i++) {
            const float av = a[(size_t)i * lda + kk];
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

static FR_AVX512 void fr_gemm_packed_avx512(int m, int n, int k, const float *a, int lda,
                                            const float *bp, int accumulate, float *c,
                                            int ldc)
{
    const int np = (n + FR_NR - 1) / FR_NR;
    for (int p = 0; p < np; p++) {
        const float *bpp = bp + (size_t)p * FR_NR * k;
        const int nc = n - p * FR_NR < FR_NR ? n - p * FR_NR : FR_NR;
        float *cp = c + p * FR_NR;
        int i = 0;
        for (; i + FR_MR <= m; i += FR_MR)
            fr_tile(FR_MR, k, a + (size_t)i * lda, lda, bpp, accumulate, cp + (size_t)i * ldc, ldc, nc);
        const float *ai = a + (size_t)i * lda;
        float *ci = cp + (size_t)i * ldc;
        switch (m - i) {   /* remainder rows, each with its own unrolled tile */
        case 7: fr_tile(7, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 6: fr_tile(6, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 5: fr_tile(5, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 4: fr_tile(4, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 3: fr_tile(3, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 2: fr_tile(2, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        case 1: fr_tile(1, k, ai, lda, bpp, accumulate, ci, ldc, nc); break;
        default: break;
        }
    }
}

void fr_gemm_packed(int m, int n, int k, const float *a, int lda, const float *bp,
                    int accumulate, float *c, int ldc)
{
    fr_gemm_packed_avx512(m, n, k, a, lda, bp, accumulate, c, ldc);
}

#else
int fr_kernel_available(void) { return 0; }
void fr_gemm_packed(int m, int n, int k, const float *a, int lda, const float *bp,
                    int accumulate, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)bp; (void)accumulate; (void)c; (void)ldc;
}
#endif
