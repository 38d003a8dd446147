/* instantiate.h — compiles the including template once per real type.

   A template source (lstm.c, gru.c, rnn.c, recurrence.c) starts with
       #ifndef FR_TEMPLATE
       #define FR_TEMPLATE "lstm.c"
       #include "instantiate.h"
       #else
       ... body written over `real`, named through FR(name) ...
       #endif
   and this header includes it twice: with real = float (names end in _f32, the fast
   path) and with real = double (names end in _f64, used for gradient checks). */
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include "fastrnn.h"

/* The cell step functions are built twice, for baseline x86-64 and for AVX-512, and the
   loader picks one per CPU (gcc's target_clones): the wheel stays portable while the gate
   math runs 16 floats wide where it can. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(FR_NO_CLONES)
#define FR_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define FR_CLONES
#endif

#define FR_CAT_(a, b) a##b
#define FR_CAT(a, b) FR_CAT_(a, b)

/* ---- float32 ---- */
#define real float
#define FR_SUFFIX _f32
#define FR(name) FR_CAT(name, _f32)
#define FR_IS_FLOAT 1
typedef fr_sgemm_t fr_gemm_f32;
#define gemm_t fr_gemm_f32
#include "mathfn.h"
#include "cells.h"
#include FR_TEMPLATE
#undef real
#undef FR_SUFFIX
#undef FR
#undef FR_IS_FLOAT
#undef gemm_t

/* ---- float64 ---- */
#define real double
#define FR_SUFFIX _f64
#define FR(name) FR_CAT(name, _f64)
#define FR_IS_FLOAT 0
typedef fr_dgemm_t fr_gemm_f64;
#define gemm_t fr_gemm_f64
#include "mathfn.h"
#include "cells.h"
#include FR_TEMPLATE
#undef real
#undef FR_SUFFIX
#undef FR
#undef FR_IS_FLOAT
#undef gemm_t
