/* bf16.c — bfloat16 inference of one layer-direction (see bf16.h).

   The driver follows recurrence.c's forward (fixed chunks of samples handed to threads,
   each chunk through all its steps, samples ordered by length so the running ones are
   rows [0, nact), the input projection of a block of steps as one product) with two
   differences: the products are bf16 x bf16 -> float32 (vdpbf16ps), and there is no
   fused [x_t, h] product (the input projection is always apart, the per-step product
   only reads W_hh). For LSTM and RNN the per-step product is added onto the step's
   rows of the input projection as it is stored (same bits as adding them in the gate
   math, which then reads one row it just wrote instead of two; L LSTM 3% faster). The
   gate math is the float32 cells' own (lstm.c, gru.c, rnn.c).

   The kernel: vdpbf16ps multiplies PAIRS of bf16 along k, so W is packed as
   [panel of 32 output columns][k/2][32 columns] pairs (k padded to even with a zero);
   a pair of the left operand's row is broadcast as one 32-bit value against the two
   16-pair vectors of a panel row; MR = 8 rows x 32 columns = 16 accumulators stay in
   registers over the whole inner dimension. The left operand (x or h) is converted to
   bf16 pairs once per block of steps (x) or per step (h) into a small buffer.

   Every AVX instruction lives in a function whose name holds "avx512bf16" and which
   runs only when fr_bf16_available() (scripts/check_wheel.sh checks the names). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "bf16.h"
#include "kernels.h"
#include "layout.h"
#include "threads.h"
#include "sync.h"

/* the float32 cells' step functions (cells.h, float instantiation) */
void lstm_rows_forward_f32(int n, int H, const float *xp, float *a, const float *b_ih,
                           const float *b_hh, float *h, int ldh, float *c, float *store,
                           float *h_keep, float *c_keep);
void gru_rows_forward_f32(int n, int H, const float *xp, float *a, const float *b_ih,
                          const float *b_hh, float *h, int ldh, float *store, float *h_keep);
void rnn_rows_forward_f32(int n, int H, int relu, const float *xp, float *a,
                          const float *b_ih, const float *b_hh, float *h, int ldh,
                          float *h_keep);

#define FR_BNR 32            /* output columns per panel (two vectors of 16 floats) */
#define FR_BMR 8             /* rows per register tile */
#define FR_BXBLOCK 32        /* steps whose input projection is one product per chunk */
#define FR_BDEFAULT_CHUNK 16
#define FR_BMAX_CHUNK 256
#define FR_BMIN_WORK 1.6e7   /* multiply-adds per thread below which threads do not pay */
#define FR_BALIGN 16         /* floats: 64 bytes */

static int fr_bf16_ok = 0;

static int fr_bgates(int cell) { return cell == FR_LSTM ? 4 : (cell == FR_GRU ? 3 : 1); }
static int fr_kpairs(int k) { return (k + 1) / 2; }
static size_t fr_bround(size_t n) { return (n + FR_BALIGN - 1) / FR_BALIGN * FR_BALIGN; }
/* a * b in size_t, 0 on overflow */
static size_t fr_bmul(size_t a, size_t b) { return (b && a > (size_t)-1 / b) ? 0 : a * b; }
/* 32-bit pairs of a packed (n x k) matrix */
static size_t fr_bpacked(int n, int k)
{
    return fr_bmul((size_t)((n + FR_BNR - 1) / FR_BNR) * FR_BNR, (size_t)fr_kpairs(k));
}
static int fr_bchunk(const fr_dims *d)
{
    int c = d->chunk > 0 ? d->chunk : FR_BDEFAULT_CHUNK;
    return c < FR_BMAX_CHUNK ? c : FR_BMAX_CHUNK;
}
static int fr_bnchunks(const fr_dims *d) { return (d->batch + fr_bchunk(d) - 1) / fr_bchunk(d); }
static int fr_bxblock(const fr_dims *d) { return d->steps < FR_BXBLOCK ? d->steps : FR_BXBLOCK; }
static int fr_bthreads(const fr_dims *d)
{
    double work = (double)d->steps * d->batch * fr_bgates(d->cell) * d->hidden
                * (double)(d->input + d->hidden);
    return fr_team_for(d->n_threads, work, FR_BMIN_WORK, fr_bnchunks(d));
}
static int fr_bdims_ok(const fr_dims *d) { return fr_dims_ok(d) && d->input <= (1 << 28); }

/* floats of one thread's area: xg (K*c, I/2 pairs), xp (K*c, GH), a (c, GH), h, cell
   (c, H), hb (c, H/2 pairs) */
static size_t fr_bper_thread(const fr_dims *d)
{
    const size_t c = (size_t)fr_bchunk(d), K = (size_t)fr_bxblock(d), H = (size_t)d->hidden;
    const size_t GH = (size_t)fr_bgates(d->cell) * H;
    const size_t parts[6] = {fr_bmul(K * c, (size_t)fr_kpairs(d->input)), fr_bmul(K * c, GH),
                             c * GH, c * H, c * H, c * (size_t)fr_kpairs(d->hidden)};
    size_t total = 0;
    for (int q = 0; q < 6; q++) {
        if (!parts[q] || total + fr_bround(parts[q]) < total) return 0;
        total += fr_bround(parts[q]);
    }
    return total;
}

/* ---- The unit-split path (inference of one chunk with several threads) ----
   As recurrence.c's float32 one: the hidden units are cut into one slice of hs = H / nt
   per thread; each thread packs (or finds in the cache) the bf16 rows of W_ih and W_hh
   that feed its units, projects a block of steps' inputs onto its gate columns, and per
   step computes its columns of h W_hh^T and updates its units; the bf16 pairs of the
   full h for the next step are assembled in a double-buffered shared row, so one barrier
   per step suffices (sync.h). A batch-1 call is bound by streaming W_hh from the
   caches at every step: each thread then streams only its slice. Every output element
   is the same accumulator over the same pairs as on the chunk path, and the gate math
   is the same per unit, so the results are the same bits (bf16.h). */
/* multiply-adds of one step: twice recurrence.c's (a bf16 step streams half the bytes;
   an RNN of hidden 128, whose bf16 W_hh fits one core's L1, ran 25% slower split) */
#define FR_BSPLIT_MIN_STEP 32768.0
static int fr_bsplit_threads(const fr_dims *d)
{
    return fr_split_team(d, fr_split_shape(d, fr_bgates(d->cell), fr_bnchunks(d) == 1,
                                           FR_BSPLIT_MIN_STEP));
}

int fr_bf16_splits_as_one_chunk(const fr_dims *d)
{
    return fr_bf16_ok && fr_avx512 && fr_bdims_ok(d)
        && fr_split_team(d, fr_split_shape(d, fr_bgates(d->cell), 1, FR_BSPLIT_MIN_STEP)) > 0;
}

/* floats of one slice's area: xg (K*B, Ip pairs), xp (K*B, GS), a (B, GS), the two bias
   slices (GS each), h and c of the slice's units (B, hs each), a packing row (pairs) */
static size_t fr_bsplit_per_thread(const fr_dims *d, int nt)
{
    const size_t B = (size_t)d->batch, K = (size_t)fr_bxblock(d), hs = (size_t)(d->hidden / nt);
    const size_t GS = (size_t)fr_bgates(d->cell) * hs, Ip = (size_t)fr_kpairs(d->input);
    const size_t Hp = (size_t)fr_kpairs(d->hidden);
    const size_t parts[8] = {fr_bmul(K * B, Ip), fr_bmul(K * B, GS), B * GS, GS, GS, B * hs,
                             B * hs, Ip > Hp ? Ip : Hp};
    size_t total = 0;
    for (int q = 0; q < 8; q++) {
        if (!parts[q] || total + fr_bround(parts[q]) < total) return 0;
        total += fr_bround(parts[q]);
    }
    return total;
}

/* pairs of the split path's packed slices: nt slices of GS columns x (Hp + Ip) pairs */
static size_t fr_bsplit_packed(const fr_dims *d)
{
    const size_t GH = (size_t)fr_bgates(d->cell) * d->hidden;
    return fr_bmul(GH, (size_t)fr_kpairs(d->hidden) + (size_t)fr_kpairs(d->input));
}

static size_t fr_bsplit_workspace(const fr_dims *d, int nt)
{
    const size_t packed = fr_bsplit_packed(d), per = fr_bsplit_per_thread(d, nt);
    const size_t hb = fr_bmul(2 * (size_t)d->batch, (size_t)fr_kpairs(d->hidden));
    const size_t threads = fr_bmul(per, (size_t)nt);
    if (!packed || !per || !hb || !threads) return 0;
    const size_t total = FR_BALIGN + fr_bround(packed) + fr_bround(hb) + threads;
    return total < threads ? 0 : total;
}

size_t fr_bf16_workspace(const fr_dims *d)
{
    if (!fr_bdims_ok(d)) return 0;
    const int GH = fr_bgates(d->cell) * d->hidden;
    const size_t pih = fr_bpacked(GH, d->input), phh = fr_bpacked(GH, d->hidden);
    const size_t per = fr_bmul(fr_bper_thread(d), (size_t)fr_bthreads(d));
    if (!pih || !phh || !per) return 0;
    size_t total = FR_BALIGN + fr_bround(pih) + fr_bround(phh) + per;
    if (total < per) return 0;
    const int nsplit = fr_bsplit_threads(d);
    if (nsplit) {
        const size_t split = fr_bsplit_workspace(d, nsplit);
        if (!split) return 0;
        if (split > total) total = split;
    }
    return total;
}

/* ---- The packed-weight cache (as recurrence.c's for float32; sync.h) ----
   A caller that runs the same weights again may hand over a cache: a key, a copy of the
   weights as they were when last packed, and the bf16 panels. Each call compares the
   weights with the copy, bit for bit, and repacks what differs (an in-place change, a
   new array, another thread count or path). Packing W_ih and W_hh to bf16 took about
   as long as 15 steps of a batch-1 LSTM call.
   Layout (floats, from the first 64-byte boundary): key (FR_BWC_KEY), copy of w_ih
   (GH x I), copy of w_hh (GH x H), panels: the chunk path's W_ih then W_hh panels, or
   the split path's slices. */
#define FR_BWC_KEY 16
#define FR_BWC_MAGIC 0x36314642
enum { FR_BWC_CHUNK = 1, FR_BWC_SPLIT = 2 };
static size_t fr_bwc_panels(const fr_dims *d)
{
    const int GH = fr_bgates(d->cell) * d->hidden;
    const size_t pih = fr_bpacked(GH, d->input), phh = fr_bpacked(GH, d->hidden);
    const size_t chunk = fr_bround(pih) + fr_bround(phh), split = fr_bsplit_packed(d);
    if (!pih || !phh || !split || chunk < pih) return 0;
    return chunk > split ? chunk : split;
}

size_t fr_bf16_weight_cache_size(const fr_dims *d)
{
    if (!fr_bdims_ok(d)) return 0;
    const size_t GH = (size_t)fr_bgates(d->cell) * d->hidden;
    const size_t ih = fr_bmul(GH, (size_t)d->input), hh = fr_bmul(GH, (size_t)d->hidden);
    const size_t panels = fr_bwc_panels(d);
    if (!ih || !hh || !panels) return 0;
    const size_t total = FR_BALIGN + FR_BWC_KEY + fr_bround(ih) + fr_bround(hh)
                       + fr_bround(panels);
    return total < panels ? 0 : total;
}

int fr_bf16_available(void) { return fr_bf16_ok; }

/* the first 64-byte boundary in a buffer (the sizes above leave room for it) */
static inline float *fr_baligned(float *p)
{
    return (float *)(void *)((char *)p + ((64 - ((uintptr_t)p & 63)) & 63));
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FR_NO_AVX512) \
    && (__GNUC__ >= 10 || defined(__clang__))
#include <immintrin.h>

int fr_bf16_cpu(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

static int fr_env_set(const char *name)
{
    const char *env = getenv(name);
    return env && env[0] && strcmp(env, "0") != 0;
}

/* decided once, when the library loads, as fr_avx512 (kernels.c) */
__attribute__((constructor)) static void fr_bf16_init_avx512bf16(void)
{
    fr_bf16_ok = fr_bf16_cpu() && !fr_env_set("FASTRNN_PORTABLE")
              && !fr_env_set("FASTRNN_NO_BF16");
}

#define FR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* k floats of src as bf16 pairs (k/2 rounded up; an odd k is padded with a zero) */
static inline __attribute__((always_inline)) FR_BF16 void
fr_bpairs_avx512bf16(uint32_t *dst, const float *src, int k)
{
    int kk = 0;
    for (; kk + 32 <= k; kk += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + kk + 16),
                                               _mm512_loadu_ps(src + kk));
        _mm512_storeu_si512((void *)(dst + kk / 2), (__m512i)v);
    }
    if (kk < k) {
        const int rem = k - kk, pairs = (rem + 1) / 2;
        const __mmask16 mlo = (__mmask16)(rem >= 16 ? 0xffffu : (1u << rem) - 1u);
        const __mmask16 mhi = (__mmask16)(rem > 16 ? (1u << (rem - 16)) - 1u : 0u);
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, src + kk + 16),
                                               _mm512_maskz_loadu_ps(mlo, src + kk));
        _mm512_mask_storeu_epi32((void *)(dst + kk / 2), (__mmask16)((1u << pairs) - 1u),
                                 (__m512i)v);
    }
}

/* rows of k floats (ld lds) into rows of k/2 pairs (ld ldd pairs) */
static FR_BF16 void fr_brows_avx512bf16(uint32_t *dst, int ldd, const float *src, size_t lds,
                                        int rows, int k)
{
    for (int r = 0; r < rows; r++)
        fr_bpairs_avx512bf16(dst + (size_t)r * ldd, src + (size_t)r * lds, k);
}

/* Panels [p0, p1) of W (n x k, ld ldw) packed for C = A W^T: pair kk of output column
   p*NR + j at bp[(p*kp + kk)*NR + j]; columns past n are zero. tmp: kp pairs. */
static FR_BF16 void fr_bpack_avx512bf16(uint32_t *bp, const float *w, int n, int k, int ldw,
                                        int p0, int p1, uint32_t *tmp)
{
    const int kp = fr_kpairs(k);
    for (int p = p0; p < p1; p++)
        for (int j = 0; j < FR_BNR; j++) {
            uint32_t *dst = bp + (size_t)p * kp * FR_BNR + j;
            const int col = p * FR_BNR + j;
            if (col < n) {
                fr_bpairs_avx512bf16(tmp, w + (size_t)col * ldw, k);
                for (int kk = 0; kk < kp; kk++) dst[(size_t)kk * FR_BNR] = tmp[kk];
            } else {
                for (int kk = 0; kk < kp; kk++) dst[(size_t)kk * FR_BNR] = 0;
            }
        }
}

/* one mr x NR tile over k2 pairs; mr is a compile-time constant at every call site.
   accumulate: C += the products (C's lines are fetched while the products run). */
static inline __attribute__((always_inline)) FR_BF16 void
fr_btile_avx512bf16(const int mr, int k2, const uint32_t *a, int lda, const uint32_t *bp,
                    float *c, int ldc, int nc, int accumulate)
{
    __m512 acc0[FR_BMR], acc1[FR_BMR];
    for (int i = 0; i < mr; i++) { acc0[i] = _mm512_setzero_ps(); acc1[i] = _mm512_setzero_ps(); }
    if (accumulate)
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + (size_t)i * ldc + 16), _MM_HINT_T0);
        }
    for (int kk = 0; kk < k2; kk++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (size_t)kk * FR_BNR));
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (size_t)kk * FR_BNR + 16));
        for (int i = 0; i < mr; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)i * lda + kk]);
            acc0[i] = _mm512_dpbf16_ps(acc0[i], av, b0);
            acc1[i] = _mm512_dpbf16_ps(acc1[i], av, b1);
        }
    }
    if (nc == FR_BNR) {
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
            if (accumulate) {
                acc0[i] = _mm512_add_ps(_mm512_loadu_ps(ci), acc0[i]);
                acc1[i] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), acc1[i]);
            }
            _mm512_storeu_ps(ci, acc0[i]);
            _mm512_storeu_ps(ci + 16, acc1[i]);
        }
    } else {
        const __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xffffu : (1u << nc) - 1u);
        const __mmask16 m1 = (__mmask16)(nc > 16 ? (1u << (nc - 16)) - 1u : 0u);
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
            if (accumulate) {
                acc0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, ci), acc0[i]);
                acc1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, ci + 16), acc1[i]);
            }
            _mm512_mask_storeu_ps(ci, m0, acc0[i]);
            _mm512_mask_storeu_ps(ci + 16, m1, acc1[i]);
        }
    }
}

/* mr (< 4) rows against npan (2 or 4) full panels at once (enough independent
   accumulators when only one or two rows run); both compile-time constants */
static inline __attribute__((always_inline)) FR_BF16 void
fr_btile_few_avx512bf16(const int mr, const int npan, int k2, const uint32_t *a, int lda,
                        const uint32_t *bp, float *c, int ldc, int accumulate)
{
    __m512 acc[3][8];
    const int nv = 2 * npan;
    const size_t ps = (size_t)FR_BNR * k2;       /* distance between panels */
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < nv; q++) acc[i][q] = _mm512_setzero_ps();
    for (int kk = 0; kk < k2; kk++) {
        __m512bh b[8];
        for (int q = 0; q < nv; q++)
            b[q] = (__m512bh)_mm512_loadu_si512(
                (const void *)(bp + (q >> 1) * ps + (size_t)kk * FR_BNR + (q & 1) * 16));
        for (int i = 0; i < mr; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[(size_t)i * lda + kk]);
            for (int q = 0; q < nv; q++) acc[i][q] = _mm512_dpbf16_ps(acc[i][q], av, b[q]);
        }
    }
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < nv; q++) {
            float *cq = c + (size_t)i * ldc + (q >> 1) * FR_BNR + (q & 1) * 16;
            _mm512_storeu_ps(cq, accumulate ? _mm512_add_ps(_mm512_loadu_ps(cq), acc[i][q])
                                            : acc[i][q]);
        }
}

/* C (m x n, ld ldc) = A (m x k2 pairs, ld lda pairs) . packed B, or (accumulate) C +=
   it. Every element is one accumulator over the pairs in order, added to C at the end,
   whatever m and the tiling: a row's result does not depend on the rows beside it. */
static FR_BF16 void fr_bgemm_avx512bf16(int m, int n, int k2, const uint32_t *a, int lda,
                                        const uint32_t *bp, float *c, int ldc, int accumulate)
{
    const int np = (n + FR_BNR - 1) / FR_BNR;
    int p0 = 0;
    if (m < 4)
        for (; p0 + 4 <= n / FR_BNR; p0 += 4) {
            const uint32_t *bpp = bp + (size_t)p0 * FR_BNR * k2;
            float *cp = c + p0 * FR_BNR;
            switch (m) {
            case 3: fr_btile_few_avx512bf16(3, 4, k2, a, lda, bpp, cp, ldc, accumulate); break;
            case 2: fr_btile_few_avx512bf16(2, 4, k2, a, lda, bpp, cp, ldc, accumulate); break;
            case 1: fr_btile_few_avx512bf16(1, 4, k2, a, lda, bpp, cp, ldc, accumulate); break;
            default: break;
            }
        }
    for (int p = p0; p < np; p++) {
        const int nc = n - p * FR_BNR < FR_BNR ? n - p * FR_BNR : FR_BNR;
        const uint32_t *bpp = bp + (size_t)p * FR_BNR * k2;
        float *cp = c + p * FR_BNR;
        int i = 0;
        for (; i + FR_BMR <= m; i += FR_BMR)
            fr_btile_avx512bf16(FR_BMR, k2, a + (size_t)i * lda, lda, bpp,
                                cp + (size_t)i * ldc, ldc, nc, accumulate);
        const uint32_t *ai = a + (size_t)i * lda;
        float *ci = cp + (size_t)i * ldc;
        switch (m - i) {
        case 7: fr_btile_avx512bf16(7, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 6: fr_btile_avx512bf16(6, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 5: fr_btile_avx512bf16(5, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 4: fr_btile_avx512bf16(4, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 3: fr_btile_avx512bf16(3, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 2: fr_btile_avx512bf16(2, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        case 1: fr_btile_avx512bf16(1, k2, ai, lda, bpp, ci, ldc, nc, accumulate); break;
        default: break;
        }
    }
}

/* fr_bgemm for the split path's per-step product of m < 4 rows over whole panels:
   pairs of panels, in reverse order at every other step (backward), so that the pairs
   the last step read last are read first, from L1 (they are not all evicted yet).
   Same bits as fr_bgemm: every element is one accumulator over the pairs in order. */
static FR_BF16 void fr_bgemm_alt_avx512bf16(int m, int n, int k2, const uint32_t *a, int lda,
                                            const uint32_t *bp, float *c, int ldc,
                                            int accumulate, int backward)
{
    const int np = n / FR_BNR;
    if (m >= 4 || n % FR_BNR != 0 || np % 2 != 0) {
        fr_bgemm_avx512bf16(m, n, k2, a, lda, bp, c, ldc, accumulate);
        return;
    }
    const int ng = np / 2;
    for (int s = 0; s < ng; s++) {
        const int p = 2 * (backward ? ng - 1 - s : s);
        const uint32_t *bpp = bp + (size_t)p * FR_BNR * k2;
        float *cp = c + p * FR_BNR;
        switch (m) {
        case 3: fr_btile_few_avx512bf16(3, 2, k2, a, lda, bpp, cp, ldc, accumulate); break;
        case 2: fr_btile_few_avx512bf16(2, 2, k2, a, lda, bpp, cp, ldc, accumulate); break;
        default: fr_btile_few_avx512bf16(1, 2, k2, a, lda, bpp, cp, ldc, accumulate); break;
        }
    }
}

FR_BF16 void fr_bf16_round_avx512bf16(unsigned short *dst, const float *src, size_t n)
{
    if (!fr_bf16_ok) return;
    uint32_t tmp[16];
    for (size_t i = 0; i < n; i += 32) {
        const int k = n - i < 32 ? (int)(n - i) : 32;
        fr_bpairs_avx512bf16(tmp, src + i, k);
        memcpy(dst + i, tmp, sizeof(unsigned short) * (size_t)k);
    }
}

int fr_bf16_matmul_avx512bf16(int m, int n, int k, const float *a, int lda, const float *w,
                              int ldw, float *c, int ldc)
{
    if (!fr_bf16_ok || m < 1 || n < 1 || k < 1) return FR_EBADDIMS;
    const int kp = fr_kpairs(k), np = (n + FR_BNR - 1) / FR_BNR;
    uint32_t *ap = malloc(sizeof(uint32_t) * (size_t)m * kp);
    uint32_t *bp = malloc(sizeof(uint32_t) * fr_bpacked(n, k));
    uint32_t *tmp = malloc(sizeof(uint32_t) * (size_t)kp);
    int rc = FR_OK;
    if (ap && bp && tmp) {
        fr_brows_avx512bf16(ap, kp, a, (size_t)lda, m, k);
        fr_bpack_avx512bf16(bp, w, n, k, ldw, 0, np, tmp);
        fr_bgemm_avx512bf16(m, n, kp, ap, kp, bp, c, ldc, 0);
    } else {
        rc = FR_EBADDIMS;
    }
    free(ap);
    free(bp);
    free(tmp);
    return rc;
}

/* The gate math of n rows of one step, the bf16 mode's cheaper activations (vmath.c):
   the chunk path's and the split path's (there H is the slice's units, ldh its width) */
static void fr_bgates_forward(int cell, int n, int H, const float *xps, float *as,
                              const float *b_ih, const float *b_hh, float *h, int ldh,
                              float *cs)
{
    switch (cell) {
    case FR_LSTM:
        if (fr_avx512)
            fr_lstm_rows_forward_avx512(n, H, xps, as, b_ih, b_hh, h, ldh, cs, NULL, NULL, NULL, 1);
        else
            lstm_rows_forward_f32(n, H, xps, as, b_ih, b_hh, h, ldh, cs, NULL, NULL, NULL);
        break;
    case FR_GRU:
        if (fr_avx512)
            fr_gru_rows_forward_avx512(n, H, xps, as, b_ih, b_hh, h, ldh, NULL, NULL, 1);
        else
            gru_rows_forward_f32(n, H, xps, as, b_ih, b_hh, h, ldh, NULL, NULL);
        break;
    default:
        if (fr_avx512)
            fr_rnn_rows_forward_fast_avx512(n, H, cell == FR_RNN_RELU, xps, as, b_ih, b_hh, h,
                                            ldh);
        else
            rnn_rows_forward_f32(n, H, cell == FR_RNN_RELU, xps, as, b_ih, b_hh, h, ldh, NULL);
    }
}

/* offset in floats of hb (c*H/2 pairs) in a thread's area */
static size_t fr_bhb_offset(const fr_dims *d)
{
    const size_t c = (size_t)fr_bchunk(d), K = (size_t)fr_bxblock(d), H = (size_t)d->hidden;
    const size_t GH = (size_t)fr_bgates(d->cell) * H;
    return fr_bround(K * c * fr_kpairs(d->input)) + fr_bround(K * c * GH) + fr_bround(c * GH)
         + 2 * fr_bround(c * H);
}

/* Samples [j*c, j*c + nb) through all their steps; w: this thread's area. */
static FR_BF16 void fr_bchunk_avx512bf16(const fr_dims *d, int j, float *w, float *out, float *h_n,
                                 float *c_n, const float *x, const int *lengths,
                                 const float *h0, const float *c0, const uint32_t *pk_ih,
                                 const uint32_t *pk_hh, const float *b_ih, const float *b_hh)
{
    const int B = d->batch, T = d->steps, I = d->input, H = d->hidden, cell = d->cell;
    const int c = fr_bchunk(d), GH = fr_bgates(cell) * H, K = fr_bxblock(d);
    const int Ip = fr_kpairs(I), Hp = fr_kpairs(H);
    const int b0 = j * c, nb = B - b0 < c ? B - b0 : c, lstm = cell == FR_LSTM;
    uint32_t *xg = (uint32_t *)w;                              /* (K*nb, Ip) pairs */
    float *xp = w + fr_bround((size_t)K * c * Ip);              /* (K*nb, GH) */
    float *a = xp + fr_bround((size_t)K * c * GH);              /* (nb, GH) */
    float *h = a + fr_bround((size_t)c * GH);                   /* (nb, H) */
    float *cs = h + fr_bround((size_t)c * H);                   /* (nb, H) LSTM */
    uint32_t *hb = (uint32_t *)(w + fr_bhb_offset(d));          /* (nb, Hp) pairs */
    int perm[FR_BMAX_CHUNK], len[FR_BMAX_CHUNK] = {0};
    fr_sort_chunk(lengths, b0, nb, perm, len);
    const int Tc = len[0];

    for (int r = 0; r < nb; r++) {
        memcpy(h + (size_t)r * H, h0 + (size_t)(b0 + perm[r]) * H, sizeof(float) * H);
        if (lstm) memcpy(cs + (size_t)r * H, c0 + (size_t)(b0 + perm[r]) * H, sizeof(float) * H);
    }
    int nact = nb;
    for (int t0 = 0; t0 < Tc; t0 += K) {
        const int kb = Tc - t0 < K ? Tc - t0 : K;
        for (int s = 0; s < kb; s++)               /* inputs of the block, as bf16 pairs */
            for (int r = 0; r < nb; r++) {
                uint32_t *dst = xg + ((size_t)s * nb + r) * Ip;
                const int t = t0 + s;
                if (t < len[r])
                    fr_bpairs_avx512bf16(dst, x + fr_row(d, fr_time_index(d, t, len[r]),
                                                          b0 + perm[r]) * I, I);
                else
                    memset(dst, 0, sizeof(uint32_t) * Ip);
            }
        fr_bgemm_avx512bf16(kb * nb, GH, Ip, xg, Ip, pk_ih, xp, GH, 0);
        for (int s = 0; s < kb; s++) {
            const int t = t0 + s;
            while (nact > 0 && len[nact - 1] <= t) nact--;
            fr_brows_avx512bf16(hb, Hp, h, (size_t)H, nact, H);
            /* LSTM, RNN: the product added to the step's input projection in place (the
               same bits as the gate math's xp + a, which then reads one hot row instead
               of two, one of them a block of 32 steps old); GRU keeps them apart (its n
               gate needs h W_hn alone) */
            float *xs = xp + (size_t)s * nb * GH;
            const int merge = cell != FR_GRU;
            fr_bgemm_avx512bf16(nact, GH, Hp, hb, Hp, pk_hh, merge ? xs : a, GH, merge);
            float *as = merge ? xs : a;                 /* the gate math's inputs */
            const float *xps = merge ? NULL : xs;
            fr_bgates_forward(cell, nact, H, xps, as, b_ih, b_hh, h, H, cs);
            if (out)
                for (int r = 0; r < nact; r++)
                    memcpy(out + fr_row(d, fr_time_index(d, t, len[r]), b0 + perm[r]) * d->ld,
                           h + (size_t)r * H, sizeof(float) * H);
        }
    }
    for (int r = 0; r < nb && out; r++)
        for (int tt = len[r]; tt < T; tt++)
            memset(out + fr_row(d, tt, b0 + perm[r]) * d->ld, 0, sizeof(float) * H);
    for (int r = 0; r < nb; r++) {
        memcpy(h_n + (size_t)(b0 + perm[r]) * H, h + (size_t)r * H, sizeof(float) * H);
        if (lstm) memcpy(c_n + (size_t)(b0 + perm[r]) * H, cs + (size_t)r * H, sizeof(float) * H);
    }
}

/* One slice's area of the split path (fr_bsplit_per_thread's parts, in order) */
typedef struct {
    uint32_t *xg, *tmp;
    float *xp, *a, *bi, *bh, *h, *c;
} fr_bslice;

static fr_bslice fr_bslice_at(float *w, int B, int K, int Ip, int GS, int hs)
{
    fr_bslice v;
    v.xg = (uint32_t *)w;
    v.xp = w + fr_bround((size_t)K * B * Ip);
    v.a = v.xp + fr_bround((size_t)K * B * GS);
    v.bi = v.a + fr_bround((size_t)B * GS);
    v.bh = v.bi + fr_bround(GS);
    v.h = v.bh + fr_bround(GS);
    v.c = v.h + fr_bround((size_t)B * hs);
    v.tmp = (uint32_t *)(v.c + fr_bround((size_t)B * hs));
    return v;
}

/* The unit-split path (see fr_bsplit_threads) for the one chunk of d->batch samples with
   nt slices. ws: aligned, fr_bsplit_workspace(d, nt) - FR_BALIGN floats; packed: the
   slices (in the cache, or at the start of ws); copy_ih / copy_hh: the cache's copies
   (NULL: no cache, always pack); force: repack whatever the copies say. Each thread
   checks and packs only its own rows. */
static FR_BF16 void fr_bsplit_avx512bf16(const fr_dims *d, int nt, float *out, float *h_n,
                                         float *c_n, const float *x, const int *lengths,
                                         const float *h0, const float *c0, const float *w_ih,
                                         const float *w_hh, const float *b_ih,
                                         const float *b_hh, float *ws, uint32_t *packed,
                                         float *copy_ih, float *copy_hh, int force)
{
    const int B = d->batch, T = d->steps, I = d->input, H = d->hidden, cell = d->cell;
    const int G = fr_bgates(cell), hs = H / nt, GS = G * hs, lstm = cell == FR_LSTM;
    const int Ip = fr_kpairs(I), Hp = fr_kpairs(H), K = fr_bxblock(d);
    const int merge = cell != FR_GRU;        /* as the chunk path: GRU keeps a apart */
    const size_t per = fr_bsplit_per_thread(d, nt);
    uint32_t *hb = (uint32_t *)(ws + fr_bround(fr_bsplit_packed(d)));   /* (2, B, Hp) */
    float *wthreads = (float *)hb + fr_bround(2 * (size_t)B * Hp);
    int perm[FR_BMAX_CHUNK], len[FR_BMAX_CHUNK] = {0};
    fr_sort_chunk(lengths, 0, B, perm, len);
    const int Tc = len[0];
    fr_step_flag flags[nt];
    fr_step_barrier bar;
    fr_step_barrier_init(&bar, flags, nt);
#pragma omp parallel num_threads(nt)
    {
        FR_FTZ_ON();
        FR_NOTE_TEAM();
        /* slices tid, tid + team, ...: one each unless OpenMP gave a smaller team */
        const int tid = FR_THREAD_NUM(), team = FR_TEAM_SIZE();
        int phase = 0;
        for (int sl = tid; sl < nt; sl += team) {
            const int u0 = sl * hs;
            uint32_t *pk_hh = packed + (size_t)sl * GS * (Hp + Ip);
            uint32_t *pk_ih = pk_hh + (size_t)GS * Hp;
            const fr_bslice v = fr_bslice_at(wthreads + per * (size_t)sl, B, K, Ip, GS, hs);
            const int changed = copy_hh &&
                fr_wc_sync_slice(copy_ih, copy_hh, w_ih, w_hh, G, H, I, u0, hs);
            for (int g = 0; g < G; g++) {                /* gate g's rows u0..u0+hs */
                if (!copy_hh || changed || force) {
                    fr_bpack_avx512bf16(pk_hh + (size_t)g * hs * Hp, w_hh + (size_t)(g * H + u0) * H,
                                        hs, H, H, 0, hs / FR_BNR, v.tmp);
                    fr_bpack_avx512bf16(pk_ih + (size_t)g * hs * Ip, w_ih + (size_t)(g * H + u0) * I,
                                        hs, I, I, 0, hs / FR_BNR, v.tmp);
                }
                memcpy(v.bi + g * hs, b_ih + g * H + u0, sizeof(float) * hs);
                memcpy(v.bh + g * hs, b_hh + g * H + u0, sizeof(float) * hs);
            }
            for (int r = 0; r < B; r++) {
                memcpy(v.h + (size_t)r * hs, h0 + (size_t)perm[r] * H + u0, sizeof(float) * hs);
                if (lstm) memcpy(v.c + (size_t)r * hs, c0 + (size_t)perm[r] * H + u0, sizeof(float) * hs);
                fr_bpairs_avx512bf16(hb + (size_t)r * Hp + u0 / 2, v.h + (size_t)r * hs, hs);
            }
        }
        fr_step_barrier_wait(&bar, team, tid, &phase);
        int nact = B;
        for (int t0 = 0; t0 < Tc; t0 += K) {
            const int kb = Tc - t0 < K ? Tc - t0 : K;
            for (int sl = tid; sl < nt; sl += team) {   /* the block's inputs, projected */
                const uint32_t *pk_ih = packed + (size_t)sl * GS * (Hp + Ip) + (size_t)GS * Hp;
                const fr_bslice v = fr_bslice_at(wthreads + per * (size_t)sl, B, K, Ip, GS, hs);
                for (int s = 0; s < kb; s++)
                    for (int r = 0; r < B; r++) {
                        uint32_t *dst = v.xg + ((size_t)s * B + r) * Ip;
                        const int t = t0 + s;
                        if (t < len[r])
                            fr_bpairs_avx512bf16(dst, x + fr_row(d, fr_time_index(d, t, len[r]),
                                                                  perm[r]) * I, I);
                        else
                            memset(dst, 0, sizeof(uint32_t) * Ip);
                    }
                fr_bgemm_avx512bf16(kb * B, GS, Ip, v.xg, Ip, pk_ih, v.xp, GS, 0);
            }
            for (int s = 0; s < kb; s++) {
                const int t = t0 + s;
                while (nact > 0 && len[nact - 1] <= t) nact--;
                const uint32_t *cur = hb + (size_t)(t & 1) * B * Hp;
                uint32_t *nxt = hb + (size_t)((t + 1) & 1) * B * Hp;
                for (int sl = tid; sl < nt; sl += team) {
                    const int u0 = sl * hs;
                    const uint32_t *pk_hh = packed + (size_t)sl * GS * (Hp + Ip);
                    const fr_bslice v = fr_bslice_at(wthreads + per * (size_t)sl, B, K, Ip, GS, hs);
                    float *xs = v.xp + (size_t)s * B * GS;
                    fr_bgemm_alt_avx512bf16(nact, GS, Hp, cur, Hp, pk_hh, merge ? xs : v.a, GS,
                                            merge, t & 1);
                    fr_bgates_forward(cell, nact, hs, merge ? NULL : xs, merge ? xs : v.a, v.bi,
                                      v.bh, v.h, hs, v.c);
                    for (int r = 0; r < nact; r++) {
                        fr_bpairs_avx512bf16(nxt + (size_t)r * Hp + u0 / 2, v.h + (size_t)r * hs, hs);
                        if (out)
                            memcpy(out + fr_row(d, fr_time_index(d, t, len[r]), perm[r]) * d->ld + u0,
                                   v.h + (size_t)r * hs, sizeof(float) * hs);
                    }
                }
                fr_step_barrier_wait(&bar, team, tid, &phase);
            }
        }
        for (int sl = tid; sl < nt; sl += team) {
            const int u0 = sl * hs;
            const fr_bslice v = fr_bslice_at(wthreads + per * (size_t)sl, B, K, Ip, GS, hs);
            for (int r = 0; r < B; r++) {
                memcpy(h_n + (size_t)perm[r] * H + u0, v.h + (size_t)r * hs, sizeof(float) * hs);
                if (lstm) memcpy(c_n + (size_t)perm[r] * H + u0, v.c + (size_t)r * hs, sizeof(float) * hs);
                for (int tt = len[r]; tt < T && out; tt++)
                    memset(out + fr_row(d, tt, perm[r]) * d->ld + u0, 0, sizeof(float) * hs);
            }
        }
        FR_FTZ_OFF();
    }
}

int fr_forward_bf16_avx512bf16(const fr_dims *d, float *out, float *h_n, float *c_n,
                               const float *x, const int *lengths, const float *h0,
                               const float *c0, const float *w_ih, const float *w_hh,
                               const float *b_ih, const float *b_hh, float *ws,
                               float *cache)
{
    if (!fr_bf16_ok || !fr_bdims_ok(d)) return FR_EBADDIMS;
    if (!fr_lengths_ok(d, lengths)) return FR_EBADDIMS;
    const int GH = fr_bgates(d->cell) * d->hidden, I = d->input, H = d->hidden;
    const int nchunks = fr_bnchunks(d), nt = fr_bthreads(d);
    const int np = (GH + FR_BNR - 1) / FR_BNR;
    const size_t per = fr_bper_thread(d);
    float *base = fr_baligned(ws);
    float *copy_ih = NULL, *copy_hh = NULL;
    uint32_t *panels = NULL;
    if (cache) {
        cache = fr_baligned(cache);
        copy_ih = cache + FR_BWC_KEY;
        copy_hh = copy_ih + fr_bround((size_t)GH * I);
        panels = (uint32_t *)(copy_hh + fr_bround((size_t)GH * H));
    }
    const int nsplit = fr_avx512 ? fr_bsplit_threads(d) : 0;
    if (nsplit && !getenv("FASTRNN_NO_SPLIT")) {
        const int force = cache ? fr_wc_claim(cache, FR_BWC_MAGIC, d, FR_BWC_SPLIT, nsplit, 0) : 1;
        fr_bsplit_avx512bf16(d, nsplit, out, h_n, c_n, x, lengths, h0, c0, w_ih, w_hh, b_ih,
                             b_hh, base, cache ? panels : (uint32_t *)base, copy_ih, copy_hh,
                             force);
        return FR_OK;
    }
    uint32_t *pk_ih = (uint32_t *)base;
    uint32_t *pk_hh = pk_ih + fr_bround(fr_bpacked(GH, I));
    float *wthreads = (float *)(pk_hh + fr_bround(fr_bpacked(GH, H)));
    int pack = 1;
    if (cache) {
        const int force = fr_wc_claim(cache, FR_BWC_MAGIC, d, FR_BWC_CHUNK, 0, 0);
        pack = fr_wc_sync_rows(copy_ih, copy_hh, w_ih, w_hh, 0, (size_t)GH, I, H) | force;
        pk_ih = panels;
        pk_hh = pk_ih + fr_bround(fr_bpacked(GH, I));
    }
    /* packed by the calling thread before the region: a barrier after packing inside it
       would make every call wait for the slowest thread to wake up (on a busy machine
       a scheduler tick), where the chunks below are handed out dynamically */
    if (pack) {
        fr_bpack_avx512bf16(pk_ih, w_ih, GH, I, I, 0, np, (uint32_t *)wthreads);
        fr_bpack_avx512bf16(pk_hh, w_hh, GH, H, H, 0, np,
                            (uint32_t *)(wthreads + fr_bhb_offset(d)));
    }
    (void)nt;
#pragma omp parallel num_threads(nt)
    {
        FR_FTZ_ON();
        FR_NOTE_TEAM();
        float *w = wthreads + per * (size_t)FR_THREAD_NUM();
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < nchunks; j++)
            fr_bchunk_avx512bf16(d, j, w, out, h_n, c_n, x, lengths, h0, c0, pk_ih, pk_hh,
                                 b_ih, b_hh);
        FR_FTZ_OFF();
    }
    return FR_OK;
}

#else   /* no AVX512_BF16 code in this build */
int fr_bf16_cpu(void) { return 0; }
void fr_bf16_round_avx512bf16(unsigned short *dst, const float *src, size_t n)
{
    (void)dst; (void)src; (void)n;
}
int fr_bf16_matmul_avx512bf16(int m, int n, int k, const float *a, int lda, const float *w,
                              int ldw, float *c, int ldc)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)w; (void)ldw; (void)c; (void)ldc;
    return FR_EBADDIMS;
}
int fr_forward_bf16_avx512bf16(const fr_dims *d, float *out, float *h_n, float *c_n,
                               const float *x, const int *lengths, const float *h0,
                               const float *c0, const float *w_ih, const float *w_hh,
                               const float *b_ih, const float *b_hh, float *ws,
                               float *cache)
{
    (void)d; (void)out; (void)h_n; (void)c_n; (void)x; (void)lengths; (void)h0; (void)c0;
    (void)w_ih; (void)w_hh; (void)b_ih; (void)b_hh; (void)ws; (void)cache;
    return FR_EBADDIMS;
}
#endif
