/* mathfn.h — activations over a vector, in place (template, see instantiate.h).

   float32 uses a Cephes-style exp (range reduction by a magic-number rounding, a
   degree-6 polynomial, the power of two built from integer bits) that gcc can
   vectorise: libm's expf/tanhf stay scalar without -ffast-math, and fast-math is
   not an option (loading such an object flips the process into flush-to-zero).
   Max relative error of fr_expf ~2 ulp; tanh uses Cephes' odd polynomial below
   |x| = 0.625 so small arguments keep full relative accuracy.
   float64 uses libm: it serves gradient checks, where exactness matters more. */
#if FR_IS_FLOAT
#ifndef FR_MATHFN_FLOAT_DONE
#define FR_MATHFN_FLOAT_DONE
#include <stdint.h>
#include "kernels.h"

static inline float fr_bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }

/* exp(x) for x in any range; saturates to ~1e-38 / ~1e38 beyond +-87. */
static inline float fr_expf(float x)
{
    x = x > 87.0f ? 87.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* n = round(x / ln2) by the 1.5*2^23 trick: exact for |n| < 2^22 */
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;          /* ln2 split in two for exactness */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;    /* 2^n, n in [-126, 126] */
    return p * fr_bits_to_float(e);
}

static inline float fr_sigmoidf(float x) { return 1.0f / (1.0f + fr_expf(-x)); }

static inline float fr_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    /* large |x|: 1 - 2/(exp(2|x|)+1), sign restored */
    float big = 1.0f - 2.0f / (fr_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    /* small |x|: Cephes tanhf polynomial */
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                     - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                   - 3.33332819422e-1f) * z * x + x;
    return ax < 0.625f ? small : big;
}
#endif /* FR_MATHFN_FLOAT_DONE */

/* vmath.c's AVX-512 versions where the CPU has them (chosen once per process, so a
   process never mixes the two) */
static inline void FR(vsigmoid)(real *restrict x, int n)
{
    if (fr_avx512) { fr_sigmoid_avx512(x, n); return; }
    for (int j = 0; j < n; j++) x[j] = fr_sigmoidf(x[j]);
}
static inline void FR(vtanh)(real *restrict x, int n)
{
    if (fr_avx512) { fr_tanh_avx512(x, n); return; }
    for (int j = 0; j < n; j++) x[j] = fr_tanhf(x[j]);
}

#else /* double */

static inline void FR(vsigmoid)(real *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = 1.0 / (1.0 + exp(-x[j]));
}
static inline void FR(vtanh)(real *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = tanh(x[j]);
}
#endif
