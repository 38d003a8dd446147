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
#include "fastrnn.h"

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
