/* sync.h — what the unit-split inference paths (recurrence.c for float32, bf16.c for
   bfloat16) share: the packed-weight cache's key and weight check, and the per-step
   barrier of a team of threads that each own a slice of the hidden units. */
#ifndef FASTRNN_SYNC_H
#define FASTRNN_SYNC_H
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include "fastrnn.h"
#include "threads.h"

/* Whether a call may take the unit-split path, whatever the thread count: one chunk of
   samples (one_chunk), hidden units that split into slices of 32 for at least 2
   threads, and at least min_step multiply-adds per step (gates * H * (I + H)), so that
   a barrier per step pays. */
static inline int fr_split_shape(const fr_dims *d, int gates, int one_chunk, double min_step)
{
    if (!one_chunk || d->hidden % 64 != 0) return 0;
    return (double)gates * d->hidden * (d->input + d->hidden) >= min_step;
}

/* Threads of the unit-split path for a call whose shape qualifies (0: not taken):
   d->n_threads, fewer until the hidden units cut into equal slices of 32; at least 2,
   and only with OpenMP. */
static inline int fr_split_team(const fr_dims *d, int shape)
{
#ifndef _OPENMP
    (void)d; (void)shape;
    return 0;
#else
    if (!shape) return 0;
    int nt = d->n_threads < 1 ? 1 : d->n_threads;
    while (nt > 1 && d->hidden % (32 * nt) != 0) nt--;
    return nt >= 2 ? nt : 0;
#endif
}

/* Writes the key (magic: whose cache) of this call's panel layout; 1 when it differs
   from the one stored (every panel must then be repacked), 0 when it is the same. */
static inline int fr_wc_claim(float *key, int magic, const fr_dims *d, int mode, int nt,
                              int fused)
{
    int k[8] = {magic, d->cell, d->input, d->hidden, mode, nt, fused, 0};
    if (memcmp(key, k, sizeof k) == 0) return 0;
    memcpy(key, k, sizeof k);
    return 1;
}

/* n floats of w against their copy: 0 when equal, else 1 after updating the copy */
static inline int fr_wc_sync(float *copy, const float *w, size_t n)
{
    if (memcmp(copy, w, sizeof(float) * n) == 0) return 0;
    memcpy(copy, w, sizeof(float) * n);
    return 1;
}

/* Rows r0 .. r0+rows of w_ih (I columns) and w_hh (H columns) against the cache's
   copies: 0 when all equal, else 1 after updating the copies (both syncs run). All the
   rows (0, G*H): the chunk paths' check; a slice's: below. */
static inline int fr_wc_sync_rows(float *copy_ih, float *copy_hh, const float *w_ih,
                                  const float *w_hh, size_t r0, size_t rows, int I, int H)
{
    const int ih = fr_wc_sync(copy_ih + r0 * I, w_ih + r0 * I, rows * I);
    return fr_wc_sync(copy_hh + r0 * H, w_hh + r0 * H, rows * H) | ih;
}

/* The rows of one unit-split slice (units u0 .. u0+hs of each of G gates), as above */
static inline int fr_wc_sync_slice(float *copy_ih, float *copy_hh, const float *w_ih,
                                   const float *w_hh, int G, int H, int I, int u0, int hs)
{
    int changed = 0;
    for (int g = 0; g < G; g++)
        changed |= fr_wc_sync_rows(copy_ih, copy_hh, w_ih, w_hh, (size_t)g * H + u0,
                                   (size_t)hs, I, H);
    return changed;
}

/* The unit-split path's barrier, once per step (a step takes about a microsecond): each
   thread publishes how many barriers it has reached in a flag on its own cache line and
   waits until every other thread's flag has caught up. Against a shared counter (which
   every thread writes, then all read) a waiter is released by one cache-line transfer
   instead of two (B1 calls in paired process A/B runs: 0.96-0.98x the time). Waiters spin
   (pause) for FR_SPINS rounds, about a millisecond, then sleep on the late thread's flag
   (Linux futex), as libgomp does: spinning that long matters on a busy machine, where a
   thread that yields or sleeps early pays a trip through the scheduler at every step
   (medians of 20 ms were measured that way). Elsewhere than Linux, OpenMP's barrier. */
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <limits.h>
#define FR_HAVE_FUTEX 1
#endif
#define FR_SPINS 100000
/* More threads than the process may run on at once (set_num_threads(3) on 2 cores): a
   waiter that spins holds a core the late thread needs, and a B1 call took 500x longer
   (740 ms against 1.5 ms). Then waiters spin briefly and sleep, as libgomp throttles its
   own spinning in that case. */
#define FR_SPINS_THROTTLED 1000
typedef struct {
    _Atomic int reached;
} __attribute__((aligned(64))) fr_step_flag;

typedef struct {
    fr_step_flag *flags;                /* one per thread of the team */
    int spins;                          /* FR_SPINS, or FR_SPINS_THROTTLED */
    _Atomic int sleepers __attribute__((aligned(64)));
} fr_step_barrier;

/* A barrier for a team of (at most) nt threads over nt flags (the caller's array) */
static inline void fr_step_barrier_init(fr_step_barrier *b, fr_step_flag *flags, int nt)
{
    for (int i = 0; i < nt; i++) atomic_init(&flags[i].reached, 0);
    b->flags = flags;
#ifdef _OPENMP
    b->spins = nt > omp_get_num_procs() ? FR_SPINS_THROTTLED : FR_SPINS;
#else
    b->spins = FR_SPINS;
#endif
    atomic_init(&b->sleepers, 0);
}

/* me: this thread's index in the team of n; phase: barriers it has passed so far (the
   caller counts them: every thread calls the barrier equally often) */
static inline void fr_step_barrier_wait(fr_step_barrier *b, int n, int me, int *phase)
{
#ifndef FR_HAVE_FUTEX
    (void)b; (void)n; (void)me; (void)phase;
#pragma omp barrier
#else
    const int p = ++*phase;
    atomic_store(&b->flags[me].reached, p);                    /* seq_cst */
    if (atomic_load(&b->sleepers) > 0)
        syscall(SYS_futex, &b->flags[me].reached, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    int spins = 0;
    for (int j = 0; j < n; j++) {
        if (j == me) continue;
        _Atomic int *f = &b->flags[j].reached;
        for (;;) {
            const int v = atomic_load_explicit(f, memory_order_acquire);
            if (v >= p) break;
            if (spins < b->spins) {
                spins++;
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
                continue;
            }
            atomic_fetch_add(&b->sleepers, 1);                 /* seq_cst */
            if (atomic_load(f) == v)
                syscall(SYS_futex, f, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
            atomic_fetch_sub(&b->sleepers, 1);
        }
    }
#endif
}
#endif
