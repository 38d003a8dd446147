/* bf16.h — bfloat16 inference of one layer-direction (bf16.c).

   Same call as fr_forward_f32 for inference (no training cache), with the products in
   bfloat16: the weights are rounded to bf16 (round to nearest even) and packed once per
   call (or kept packed in a cache between calls); the inputs x_t and the state h_{t-1}
   are rounded to bf16 as the left operand of each product; the products run on
   AVX512_BF16 (vdpbf16ps) into float32 accumulators. Everything else stays float32 and is the float32 path's own code: the
   bias adds, the gate math (lstm.c, gru.c, rnn.c), the cell state, h itself.
     xp = bf16(x) bf16(W_ih)^T     (a block of steps of a chunk in one product)
     a  = bf16(h) bf16(W_hh)^T     (per step)
   The order of the float32 sums is fixed: each output element is one accumulator that
   adds, for k = 0, 2, 4, ..., first the product of the pair's odd element and then the
   even one (vdpbf16ps' order; every product of two bf16 values is exact in float32).
   Denormal inputs of the conversion and of the products count as zero, and denormal
   sums are flushed to zero (the instructions' fixed DAZ/FTZ).
   Results are bitwise independent of the thread count (fixed chunks, d->chunk) and of
   the rows beside a row in a product.

   Only on CPUs with AVX512_BF16 (and AVX-512F), when FASTRNN_PORTABLE and
   FASTRNN_NO_BF16 are unset, decided once when the library loads
   (fr_bf16_available()); callers fall back to float32 otherwise. */
#ifndef FASTRNN_BF16_H
#define FASTRNN_BF16_H
#include <stddef.h>
#include "fastrnn.h"

/* 1 when bf16 inference runs here: CPU has AVX512_BF16 and AVX-512F, the code was
   compiled in, neither FASTRNN_PORTABLE nor FASTRNN_NO_BF16 is set (at load). */
int fr_bf16_available(void);
/* 1 when the CPU has AVX512_BF16 and AVX-512F (whatever the environment says) */
int fr_bf16_cpu(void);

/* 1 when bf16 inference of d, its batch as one chunk, takes the unit-split path (hidden
   units over the threads) given at least 2 threads (d->n_threads), as
   fr_splits_as_one_chunk for float32. */
int fr_bf16_splits_as_one_chunk(const fr_dims *d);

/* Workspace in float elements for fr_forward_bf16_avx512bf16 (0: bad sizes/overflow). */
size_t fr_bf16_workspace(const fr_dims *d);
/* Float elements of a packed-weight cache for fr_forward_bf16_avx512bf16: depends on the
   cell and sizes only (0: bad sizes/overflow). */
size_t fr_bf16_weight_cache_size(const fr_dims *d);

/* Inference forward of one layer-direction in bf16 (see above). Arguments as
   fr_forward_f32 without the training buffers. cache: NULL, or a packed-weight cache of
   fr_bf16_weight_cache_size(d) floats, zeroed when made and then kept between calls
   (the weights are compared with the cache's copy on every call and repacked when they
   differ), one per calling thread. A batch of one chunk runs with its hidden units
   split over the threads (bf16.c). FR_EBADDIMS for bad sizes or lengths or when
   fr_bf16_available() is 0. */
int fr_forward_bf16_avx512bf16(const fr_dims *d, float *out, float *h_n, float *c_n,
                               const float *x, const int *lengths, const float *h0,
                               const float *c0, const float *w_ih, const float *w_hh,
                               const float *b_ih, const float *b_hh, float *ws,
                               float *cache);

/* Building blocks, exposed for the tests (fastrnn._core.bf16_*): */
/* bf16 of n floats, round to nearest even (denormals to signed zero), as uint16 bits */
void fr_bf16_round_avx512bf16(unsigned short *dst, const float *src, size_t n);
/* C (m x n, ld ldc) = bf16(A) (m x k, ld lda) bf16(W)^T, W (n x k, ld ldw) */
int fr_bf16_matmul_avx512bf16(int m, int n, int k, const float *a, int lda, const float *w,
                              int ldw, float *c, int ldc);
#endif
