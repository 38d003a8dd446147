/* vmath.c — float32 sigmoid and tanh over arrays, AVX-512 (runtime-dispatched).

   Why not the portable versions in mathfn.h: compiled without -ffast-math, gcc keeps
   every division a true vdivps, and the gate math of an LSTM step holds five of them per
   unit (about 10 cycles each per 16 floats on this CPU): a fifth of an M-size inference
   step went to the activations. Here
     - a division is rcp14 plus one Newton step (relative error ~2^-28 before rounding);
     - exp builds 2^n with vscalefps (no integer exponent arithmetic);
     - the formulas and polynomials are mathfn.h's, so both paths agree to rounding.
   Same results on every thread count (pure element-wise functions). Callers check
   fr_avx512 (set once when the library loads) and fall back to mathfn.h. */
#include <stdint.h>
#include "kernels.h"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FR_NO_AVX512)
#include <immintrin.h>

#define FR_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))

/* 1/d for d in [1, 2^126]: rcp14 and one Newton step */
static inline FR_AVX512 __m512 fr_rcp16_avx512(__m512 d)
{
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);
}

/* exp(s x) for x in [-87, 87] (callers clamp) and s = +1 or -1, the sign folded into
   the range reduction; n = round(s x / ln2) by the 1.5*2^23 trick (one add, where
   vrndscaleps takes two uops on the busy port); same Cephes polynomial as mathfn.h */
static inline FR_AVX512 __m512 fr_exp16_avx512(__m512 x, const int neg)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(neg ? -1.44269504088896341f : 1.44269504088896341f),
                        magic), magic);
    __m512 r;
    if (neg) {            /* r = -x - n ln2 */
        r = _mm512_fmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
        r = _mm512_fnmsub_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    } else {              /* r = x - n ln2 */
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    }
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline FR_AVX512 __m512 fr_sigmoid16_avx512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f));
    return fr_rcp16_avx512(_mm512_add_ps(_mm512_set1_ps(1.0f), fr_exp16_avx512(x, 1)));
}

/* tanh(x) as mathfn.h computes it: 1 - 2/(exp(2|x|) + 1) with the sign restored for
   |x| >= 0.625, Cephes' odd polynomial below (full relative accuracy near 0). A rational
   interpolant (Eigen's) would be cheaper, but its few-ulp error next to +-1 ruins
   1 - tanh^2 in backward for saturated units (measured: 40% off in a weight gradient). */
static inline FR_AVX512 __m512 fr_tanh16_avx512(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 ax = _mm512_andnot_ps(sign, x);
    const __m512 e = fr_exp16_avx512(_mm512_min_ps(_mm512_add_ps(ax, ax), _mm512_set1_ps(20.0f)), 0);
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 big = _mm512_fnmadd_ps(two, fr_rcp16_avx512(_mm512_add_ps(e, _mm512_set1_ps(1.0f))),
                                  _mm512_set1_ps(1.0f));
    big = _mm512_or_ps(big, _mm512_and_ps(sign, x));
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
    const __mmask16 lo = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(lo, big, small);
}

/* name(x, n): n floats in place */
#define FR_ARRAY_FN(name, fn16)                                                      \
    FR_AVX512 void name(float *x, int n)                                             \
    {                                                                                \
        const __mmask16 m = (__mmask16)((1u << (n & 15)) - 1u);                      \
        int j = 0;                                                                   \
        for (; j + 16 <= n; j += 16)                                                 \
            _mm512_storeu_ps(x + j, fn16(_mm512_loadu_ps(x + j)));                   \
        if (j < n)                                                                   \
            _mm512_mask_storeu_ps(x + j, m, fn16(_mm512_maskz_loadu_ps(m, x + j)));  \
    }
FR_ARRAY_FN(fr_sigmoid_avx512, fr_sigmoid16_avx512)
FR_ARRAY_FN(fr_tanh_avx512, fr_tanh16_avx512)

/* the lanes of the 16-unit block that holds the last `left` units (all 16 if more) */
static inline __mmask16 fr_lanes16(int left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* the lanes of m at p (a plain load when m is the constant whole mask: it can then be
   an operand of the arithmetic that uses it) */
static inline __attribute__((always_inline)) FR_AVX512 __m512
fr_load_part_avx512(const float *p, __mmask16 m)
{
    if (__builtin_constant_p(m) && m == 0xFFFF) return _mm512_loadu_ps(p);
    return _mm512_maskz_loadu_ps(m, p);
}

static inline __attribute__((always_inline)) FR_AVX512 void
fr_store_part_avx512(float *p, __mmask16 m, __m512 v)
{
    if (__builtin_constant_p(m) && m == 0xFFFF) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, m, v);
}

/* bf16 inference's activations (the fused steps below with fast = 1): 2^t by a degree-4
   polynomial (near-minimax on [-1/2, 1/2] with p(0) = 1, relative error 2.9e-6) instead
   of Cephes' degree 7, and tanh as 1 - 2/(e^2|x| + 1) everywhere (absolute error ~1e-7
   near 0, no second polynomial; tanh(0) = 0 exactly). Errors of a few 1e-6 against bf16
   products' ~1e-3; the gate math was 26% of an M-size bf16 LSTM call.
   tests/test_bf16.py's reference computes the same formulas in numpy. */
static inline FR_AVX512 __m512 fr_exp2_fast16_avx512(__m512 t)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(_mm512_add_ps(t, magic), magic);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(0.00958285294f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0559064262f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240240991f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693124175f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));          /* exact at f = 0 */
    return _mm512_scalef_ps(p, n);
}

static inline FR_AVX512 __m512 fr_sigmoid_fast16_avx512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(87.0f));
    const __m512 e = fr_exp2_fast16_avx512(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f)));
    return fr_rcp16_avx512(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline FR_AVX512 __m512 fr_tanh_fast16_avx512(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 ax = _mm512_min_ps(_mm512_andnot_ps(sign, x), _mm512_set1_ps(10.0f));
    const __m512 e = fr_exp2_fast16_avx512(_mm512_mul_ps(ax, _mm512_set1_ps(2.88539008177792681f)));
    const __m512 t = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f),
                                      fr_rcp16_avx512(_mm512_add_ps(e, _mm512_set1_ps(1.0f))),
                                      _mm512_set1_ps(1.0f));
    return _mm512_or_ps(t, _mm512_and_ps(sign, x));
}

static inline __attribute__((always_inline)) FR_AVX512 __m512 fr_sig16(__m512 x, const int fast)
{
    return fast ? fr_sigmoid_fast16_avx512(x) : fr_sigmoid16_avx512(x);
}

static inline __attribute__((always_inline)) FR_AVX512 __m512 fr_th16(__m512 x, const int fast)
{
    return fast ? fr_tanh_fast16_avx512(x) : fr_tanh16_avx512(x);
}

/* Blocks of 16 units the forward steps below compute side by side: their activations
   are independent chains of ~40 dependent operations each, and placed side by side
   in the code they overlap (a hot LSTM gate pass: 99-111 -> 81-88 TSC ticks per 16
   units, H = 256, 16 rows; 3 or 4 blocks gained no more). Every unit's arithmetic is
   unchanged. */
#define FR_UNITS_U 2

/* The LSTM and GRU forward steps of n rows in one pass per 16 units, everything in
   registers (lstm.c / gru.c make a pass per gate sum, one per activation and one per
   update): GRU inference 5-15% faster at M on one thread, the gate part of a B1 step on
   the unit-split path 30% shorter; LSTM within 2% either way.
   Same formulas as the cell files; every float32 caller on AVX-512 (every path, every
   thread count) runs these, so results do not depend on the path. store: the values
   backward needs ([i, f, g, o] / [r, z, n, W_hn h + b_hn]), or NULL (inference: nothing
   but h and c is written). */
static inline __attribute__((always_inline)) FR_AVX512 __m512
fr_sum4_avx512(const float *xp, const float *a, const float *bi, const float *bh, int j,
               __mmask16 m)
{
    /* ((x + a) + b_ih) + b_hh, or (a + b_ih) + b_hh: the cell files' order */
    __m512 s = fr_load_part_avx512(a + j, m);
    if (xp) s = _mm512_add_ps(fr_load_part_avx512(xp + j, m), s);
    s = _mm512_add_ps(s, fr_load_part_avx512(bi + j, m));
    return _mm512_add_ps(s, fr_load_part_avx512(bh + j, m));
}

/* The values a training forward keeps for backward (gates, h and c rows) are written
   with non-temporal stores when every row starts on a 64-byte boundary (the layer's
   buffers are aligned so; H a multiple of 16): they are read again only by the backward,
   after the whole sequence, and a plain store first reads each line (the store's
   traffic doubled) and evicts what the next steps need (the packed weights). Training
   step (forward + backward), 2 threads, with the aligned buffers (bench/README.md):
   LSTM M -14%, a 300x100x8 batch -20%, S -28%; GRU -5%, -16%, -20%. Same values,
   same bits. */
static inline int fr_nt_rows(int H, const float *a, const float *b, const float *c)
{
    return H % 16 == 0 && !((uintptr_t)a & 63) && !((uintptr_t)b & 63) && !((uintptr_t)c & 63);
}

/* a kept value: streamed (nt: every lane, the rows aligned) or stored in the lanes of m */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_keep16(float *p, __mmask16 m, __m512 v, const int nt)
{
    if (nt) _mm512_stream_ps(p, v);
    else fr_store_part_avx512(p, m, v);
}

/* four kept values of a row of n units at p, p + n, p + 2n, p + 3n */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_keep4(float *p, int n, __mmask16 m, __m512 v0, __m512 v1, __m512 v2, __m512 v3,
         const int nt)
{
    fr_keep16(p, m, v0, nt);
    fr_keep16(p + n, m, v1, nt);
    fr_keep16(p + 2 * n, m, v2, nt);
    fr_keep16(p + 3 * n, m, v3, nt);
}

/* U blocks of 16 units of one LSTM row from unit j, the lanes of each in m (whole but
   for a single last block; whole whenever nt) */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_lstm_units(const int U, int j, __mmask16 m, int H, const float *xr, const float *ar,
              const float *b_ih, const float *b_hh, float *hr, float *cr, float *st,
              float *hk, float *ck, const int fast, const int nt)
{
    __m512 i[FR_UNITS_U], f[FR_UNITS_U], g[FR_UNITS_U], o[FR_UNITS_U];
    __m512 cn[FR_UNITS_U], hn[FR_UNITS_U];
    for (int u = 0; u < U; u++)
        i[u] = fr_sig16(fr_sum4_avx512(xr, ar, b_ih, b_hh, j + 16 * u, m), fast);
    for (int u = 0; u < U; u++)
        f[u] = fr_sig16(fr_sum4_avx512(xr, ar, b_ih, b_hh, H + j + 16 * u, m), fast);
    for (int u = 0; u < U; u++)
        g[u] = fr_th16(fr_sum4_avx512(xr, ar, b_ih, b_hh, 2 * H + j + 16 * u, m), fast);
    for (int u = 0; u < U; u++)
        o[u] = fr_sig16(fr_sum4_avx512(xr, ar, b_ih, b_hh, 3 * H + j + 16 * u, m), fast);
    for (int u = 0; u < U; u++)
        cn[u] = _mm512_fmadd_ps(f[u], fr_load_part_avx512(cr + j + 16 * u, m),
                                _mm512_mul_ps(i[u], g[u]));
    for (int u = 0; u < U; u++)
        hn[u] = _mm512_mul_ps(fr_th16(cn[u], fast), o[u]);
    for (int u = 0; u < U; u++) {
        const int ju = j + 16 * u;
        fr_store_part_avx512(cr + ju, m, cn[u]);
        fr_store_part_avx512(hr + ju, m, hn[u]);
        if (st) fr_keep4(st + ju, H, m, i[u], f[u], g[u], o[u], nt);
        if (hk) fr_keep16(hk + ju, m, hn[u], nt);
        if (ck) fr_keep16(ck + ju, m, cn[u], nt);
    }
}

static inline __attribute__((always_inline)) FR_AVX512 void
fr_lstm_rows_body(int n, int H, const float *xp, const float *a, const float *b_ih,
                  const float *b_hh, float *h, int ldh, float *c, float *store, float *h_keep,
                  float *c_keep, const int fast)
{
    const size_t GH = 4 * (size_t)H;
    const int nt = (store || h_keep || c_keep) && fr_nt_rows(H, store, h_keep, c_keep);
    for (int r = 0; r < n; r++) {
        const float *xr = xp ? xp + (size_t)r * GH : NULL, *ar = a + (size_t)r * GH;
        float *hr = h + (size_t)r * ldh, *cr = c + (size_t)r * H;
        float *st = store ? store + (size_t)r * GH : NULL;
        float *hk = h_keep ? h_keep + (size_t)r * H : NULL;
        float *ck = c_keep ? c_keep + (size_t)r * H : NULL;
        int j = 0;
        for (; j + 16 * FR_UNITS_U <= H; j += 16 * FR_UNITS_U)    /* blocks side by side */
            fr_lstm_units(FR_UNITS_U, j, 0xFFFF, H, xr, ar, b_ih, b_hh, hr, cr, st, hk, ck,
                          fast, nt);
        for (; j < H; j += 16)
            fr_lstm_units(1, j, fr_lanes16(H - j), H, xr, ar, b_ih, b_hh, hr, cr, st, hk, ck,
                          fast, nt);
    }
    if (nt) _mm_sfence();       /* the streamed rows are visible before anything after */
}

FR_AVX512 void fr_lstm_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                           const float *b_ih, const float *b_hh, float *h,
                                           int ldh, float *c, float *store, float *h_keep,
                                           float *c_keep, int fast)
{
    if (fast)
        fr_lstm_rows_body(n, H, xp, a, b_ih, b_hh, h, ldh, c, store, h_keep, c_keep, 1);
    else
        fr_lstm_rows_body(n, H, xp, a, b_ih, b_hh, h, ldh, c, store, h_keep, c_keep, 0);
}

/* U blocks of 16 units of one GRU row from unit j, as fr_lstm_units; the previous state
   is read from hpr (which may be hr itself) and the new one written to hr */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_gru_units(const int U, int j, __mmask16 m, int H, const float *xr, const float *ar,
             const float *b_ih, const float *b_hh, const float *hpr, float *hr, float *st,
             float *hk, const int fast, const int nt)
{
    __m512 rg[FR_UNITS_U], zg[FR_UNITS_U], hn[FR_UNITS_U], ng[FR_UNITS_U];
    for (int u = 0; u < U; u++)
        rg[u] = fr_sig16(fr_sum4_avx512(xr, ar, b_ih, b_hh, j + 16 * u, m), fast);
    for (int u = 0; u < U; u++)
        zg[u] = fr_sig16(fr_sum4_avx512(xr, ar, b_ih, b_hh, H + j + 16 * u, m), fast);
    for (int u = 0; u < U; u++) {
        const int ju = j + 16 * u;
        hn[u] = _mm512_add_ps(fr_load_part_avx512(ar + 2 * H + ju, m),
                              fr_load_part_avx512(b_hh + 2 * H + ju, m));
        const __m512 xn = _mm512_add_ps(fr_load_part_avx512(xr + 2 * H + ju, m),
                                        fr_load_part_avx512(b_ih + 2 * H + ju, m));
        ng[u] = fr_th16(_mm512_fmadd_ps(rg[u], hn[u], xn), fast);
    }
    for (int u = 0; u < U; u++) {
        const int ju = j + 16 * u;
        /* h' = n + z (h - n), h read from hpr (the previous state's row) */
        const __m512 hp = fr_load_part_avx512(hpr + ju, m);
        const __m512 hnew = _mm512_fmadd_ps(zg[u], _mm512_sub_ps(hp, ng[u]), ng[u]);
        fr_store_part_avx512(hr + ju, m, hnew);
        if (st) fr_keep4(st + ju, H, m, rg[u], zg[u], ng[u], hn[u], nt);
        if (hk) fr_keep16(hk + ju, m, hnew, nt);
    }
}

/* n GRU rows; h_prev: the previous state's rows (ld ldh), or NULL: h's own (updated in
   place) */
static inline __attribute__((always_inline)) FR_AVX512 void
fr_gru_rows_body(int n, int H, const float *xp, const float *a, const float *b_ih,
                 const float *b_hh, const float *h_prev, float *h, int ldh, float *store,
                 float *h_keep, const int fast)
{
    const size_t GH = 3 * (size_t)H;
    const int nt = (store || h_keep) && fr_nt_rows(H, store, h_keep, NULL);
    for (int r = 0; r < n; r++) {
        const float *xr = xp + (size_t)r * GH, *ar = a + (size_t)r * GH;
        float *hr = h + (size_t)r * ldh;
        const float *hpr = h_prev ? h_prev + (size_t)r * ldh : hr;
        float *hk = h_keep ? h_keep + (size_t)r * H : NULL;
        float *st = store ? store + (size_t)r * 4 * H : NULL;
        int j = 0;
        for (; j + 16 * FR_UNITS_U <= H; j += 16 * FR_UNITS_U)    /* blocks side by side */
            fr_gru_units(FR_UNITS_U, j, 0xFFFF, H, xr, ar, b_ih, b_hh, hpr, hr, st, hk, fast, nt);
        for (; j < H; j += 16)
            fr_gru_units(1, j, fr_lanes16(H - j), H, xr, ar, b_ih, b_hh, hpr, hr, st, hk, fast,
                         nt);
    }
    if (nt) _mm_sfence();       /* the streamed rows are visible before anything after */
}

FR_AVX512 void fr_gru_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                          const float *b_ih, const float *b_hh, float *h,
                                          int ldh, float *store, float *h_keep, int fast)
{
    if (fast)
        fr_gru_rows_body(n, H, xp, a, b_ih, b_hh, NULL, h, ldh, store, h_keep, 1);
    else
        fr_gru_rows_body(n, H, xp, a, b_ih, b_hh, NULL, h, ldh, store, h_keep, 0);
}

/* One GRU row of inference (float32 activations) that reads the previous state from
   h_prev and writes the new one to h: the unit-split path keeps both in its two state
   rows, so nothing is copied into h first. */
FR_AVX512 void fr_gru_row_forward_from_avx512(int H, const float *xp, const float *a,
                                              const float *b_ih, const float *b_hh,
                                              const float *h_prev, float *h)
{
    fr_gru_rows_body(1, H, xp, a, b_ih, b_hh, h_prev, h, H, NULL, NULL, 0);
}

/* The RNN forward step of n rows for bf16 inference: h = act(x + a + b_ih + b_hh) with
   the cheaper tanh (or relu), in one pass (the float32 path keeps rnn.c's). */
FR_AVX512 void fr_rnn_rows_forward_fast_avx512(int n, int H, int relu, const float *xp,
                                               const float *a, const float *b_ih,
                                               const float *b_hh, float *h, int ldh)
{
    for (int r = 0; r < n; r++) {
        const float *xr = xp ? xp + (size_t)r * H : NULL, *ar = a + (size_t)r * H;
        float *hr = h + (size_t)r * ldh;
        for (int j = 0; j < H; j += 16) {
            const __mmask16 m = fr_lanes16(H - j);
            const __m512 pre = fr_sum4_avx512(xr, ar, b_ih, b_hh, j, m);
            _mm512_mask_storeu_ps(hr + j, m, relu ? _mm512_max_ps(pre, _mm512_setzero_ps())
                                                  : fr_tanh_fast16_avx512(pre));
        }
    }
}

/* The LSTM backward step of n rows in one pass per 16 units, everything in registers
   (lstm.c makes a pass for tanh(c) and one for the gradients; this cut an M training
   step by 10%). Same formulas as lstm.c. dgh may be store itself: each block's four
   gate vectors are loaded before its four gradient vectors are stored. */
FR_AVX512 void fr_lstm_rows_backward_avx512(int n, int H, const float *store,
                                            const float *c_prev, const float *c_t, float *dh,
                                            float *dc, float *dgh)
{
    const int GH = 4 * H;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int r = 0; r < n; r++) {
        const float *st = store + (size_t)r * GH;
        const float *cp = c_prev + (size_t)r * H, *ct = c_t + (size_t)r * H;
        float *dhr = dh + (size_t)r * H, *dcr = dc + (size_t)r * H, *g = dgh + (size_t)r * GH;
        for (int j = 0; j < H; j += 16) {
            const __mmask16 m = fr_lanes16(H - j);
            const __m512 i = fr_load_part_avx512(st + j, m), f = fr_load_part_avx512(st + H + j, m);
            const __m512 gg = fr_load_part_avx512(st + 2 * H + j, m), o = fr_load_part_avx512(st + 3 * H + j, m);
            const __m512 t = fr_tanh16_avx512(fr_load_part_avx512(ct + j, m));
            const __m512 d = fr_load_part_avx512(dhr + j, m);
            /* dct = dc + dh * o * (1 - t^2) */
            const __m512 dct = _mm512_fmadd_ps(_mm512_mul_ps(d, o), _mm512_fnmadd_ps(t, t, one),
                                               fr_load_part_avx512(dcr + j, m));
            const __m512 di = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, gg), i),
                                            _mm512_sub_ps(one, i));
            const __m512 df = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, fr_load_part_avx512(cp + j, m)), f),
                                            _mm512_sub_ps(one, f));
            const __m512 dg = _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(gg, gg, one));
            const __m512 dout = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, t), o),
                                              _mm512_sub_ps(one, o));
            fr_keep4(g + j, H, m, di, df, dg, dout, 0);
            _mm512_mask_storeu_ps(dcr + j, m, _mm512_mul_ps(dct, f));
            _mm512_mask_storeu_ps(dhr + j, m, _mm512_setzero_ps());
        }
    }
}

/* The GRU backward step of n rows in one pass per 16 units, everything in registers
   (gru.c's portable loop compiles to scalar code, its AVX-512 clone too: objdump shows
   vmulss/vmovss only). Same formulas and operation
   order as gru.c's gru_step_backward; store holds [r, z, n, W_hn h + b_hn]. dh is read
   before it is overwritten with its direct part dh * z. */
FR_AVX512 void fr_gru_rows_backward_avx512(int n, int H, const float *store,
                                           const float *h_prev, float *dh, float *dgh,
                                           float *const *dgi_rows)
{
    const size_t GH = 3 * (size_t)H;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int r = 0; r < n; r++) {
        const float *st = store + (size_t)r * 4 * H, *hp = h_prev + (size_t)r * H;
        float *dhr = dh + (size_t)r * H, *gh = dgh + (size_t)r * GH, *gi = dgi_rows[r];
        for (int j = 0; j < H; j += 16) {
            const __mmask16 m = fr_lanes16(H - j);
            const __m512 rg = fr_load_part_avx512(st + j, m);
            const __m512 zg = fr_load_part_avx512(st + H + j, m);
            const __m512 ng = fr_load_part_avx512(st + 2 * H + j, m);
            const __m512 hn = fr_load_part_avx512(st + 3 * H + j, m);
            const __m512 d = fr_load_part_avx512(dhr + j, m);
            const __m512 omz = _mm512_sub_ps(one, zg);
            /* dan = d (1 - z) (1 - n^2); dar = dan hn r (1 - r); daz = d (h - n) z (1 - z) */
            const __m512 dan = _mm512_mul_ps(_mm512_mul_ps(d, omz), _mm512_fnmadd_ps(ng, ng, one));
            const __m512 dar = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dan, hn), rg),
                                             _mm512_sub_ps(one, rg));
            const __m512 daz = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(fr_load_part_avx512(hp + j, m), ng)), zg),
                omz);
            _mm512_mask_storeu_ps(gh + j, m, dar);
            _mm512_mask_storeu_ps(gh + H + j, m, daz);
            _mm512_mask_storeu_ps(gh + 2 * H + j, m, _mm512_mul_ps(dan, rg));
            _mm512_mask_storeu_ps(gi + j, m, dar);
            _mm512_mask_storeu_ps(gi + H + j, m, daz);
            _mm512_mask_storeu_ps(gi + 2 * H + j, m, dan);
            _mm512_mask_storeu_ps(dhr + j, m, _mm512_mul_ps(d, zg));
        }
    }
}

#else
void fr_gru_rows_backward_avx512(int n, int H, const float *store, const float *h_prev,
                                 float *dh, float *dgh, float *const *dgi_rows)
{
    (void)n; (void)H; (void)store; (void)h_prev; (void)dh; (void)dgh; (void)dgi_rows;
}
void fr_lstm_rows_backward_avx512(int n, int H, const float *store, const float *c_prev,
                                  const float *c_t, float *dh, float *dc, float *dgh)
{
    (void)n; (void)H; (void)store; (void)c_prev; (void)c_t; (void)dh; (void)dc; (void)dgh;
}
void fr_lstm_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                 const float *b_ih, const float *b_hh, float *h, int ldh,
                                 float *c, float *store, float *h_keep, float *c_keep, int fast)
{
    (void)n; (void)H; (void)xp; (void)a; (void)b_ih; (void)b_hh; (void)h; (void)ldh; (void)c;
    (void)store; (void)h_keep; (void)c_keep; (void)fast;
}
void fr_gru_rows_forward_avx512(int n, int H, const float *xp, const float *a,
                                const float *b_ih, const float *b_hh, float *h, int ldh,
                                float *store, float *h_keep, int fast)
{
    (void)n; (void)H; (void)xp; (void)a; (void)b_ih; (void)b_hh; (void)h; (void)ldh;
    (void)store; (void)h_keep; (void)fast;
}
void fr_gru_row_forward_from_avx512(int H, const float *xp, const float *a,
                                    const float *b_ih, const float *b_hh,
                                    const float *h_prev, float *h)
{
    (void)H; (void)xp; (void)a; (void)b_ih; (void)b_hh; (void)h_prev; (void)h;
}
void fr_rnn_rows_forward_fast_avx512(int n, int H, int relu, const float *xp,
                                     const float *a, const float *b_ih, const float *b_hh,
                                     float *h, int ldh)
{
    (void)n; (void)H; (void)relu; (void)xp; (void)a; (void)b_ih; (void)b_hh; (void)h;
    (void)ldh;
}
void fr_sigmoid_avx512(float *x, int n) { (void)x; (void)n; }
void fr_tanh_avx512(float *x, int n) { (void)x; (void)n; }
#endif
