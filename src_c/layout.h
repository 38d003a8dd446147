/* layout.h — where a (step, sample) lives and which samples a chunk runs, shared by the
   float32/float64 recurrence (recurrence.c) and the bf16 inference driver (bf16.c), so
   both read and write the same rows in the same order. */
#ifndef FASTRNN_LAYOUT_H
#define FASTRNN_LAYOUT_H
#include <stddef.h>
#include "fastrnn.h"

/* Row of (time step t, sample b) in x, out, d_out, dx: batch-first (b, t) or
   time-major (t, b). The recurrence's own buffers are always (loop step, sample). */
static inline size_t fr_row(const fr_dims *d, int t, int b)
{
    return d->batch_first ? (size_t)b * d->steps + t : (size_t)t * d->batch + b;
}

/* The time step of loop step t for a sample of length len (reverse: from its end). */
static inline int fr_time_index(const fr_dims *d, int t, int len)
{
    return d->reverse ? len - 1 - t : t;
}

static inline int fr_dims_ok(const fr_dims *d)
{
    return d->cell >= FR_LSTM && d->cell <= FR_RNN_RELU && d->batch > 0 && d->steps > 0
        && d->input > 0 && d->hidden > 0 && d->ld >= d->hidden && d->hidden <= (1 << 26);
}

static inline int fr_lengths_ok(const fr_dims *d, const int *lengths)
{
    for (int b = 0; b < d->batch; b++)
        if (lengths[b] < 1 || lengths[b] > d->steps) return 0;
    return 1;
}

/* The chunk's samples ordered by length, longest first (stable: ties keep batch order).
   perm[r] is the r-th sample (relative to b0), len[r] its length. Insertion sort: a
   chunk is a few dozen samples at most. */
static inline void fr_sort_chunk(const int *lengths, int b0, int nb, int *perm, int *len)
{
    for (int r = 0; r < nb; r++) {
        const int l = lengths[b0 + r];
        int q = r;
        while (q > 0 && len[q - 1] < l) { perm[q] = perm[q - 1]; len[q] = len[q - 1]; q--; }
        perm[q] = r;
        len[q] = l;
    }
}
#endif
