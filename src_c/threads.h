/* threads.h — OpenMP helpers shared by the core's sources, and the record of how many
   threads a call really used (read by the tests that claim thread-count invariance, so
   they can prove several threads worked).

   Each parallel region calls FR_NOTE_TEAM() once per thread; the team's thread 0 is the
   calling thread, so the record lives in the caller's thread-local storage: concurrent
   calls from several Python threads each see their own. */
#ifndef FASTRNN_THREADS_H
#define FASTRNN_THREADS_H
#ifdef _OPENMP
#include <omp.h>
#define FR_THREAD_NUM() omp_get_thread_num()
#define FR_TEAM_SIZE() omp_get_num_threads()
#else
#define FR_THREAD_NUM() 0
#define FR_TEAM_SIZE() 1
#endif
void fr_note_threads(int n);
#define FR_NOTE_TEAM() do { if (FR_THREAD_NUM() == 0) fr_note_threads(FR_TEAM_SIZE()); } while (0)

/* Threads for a call of `work` units cut into `items` pieces: at most n_threads, at most
   one per `min_work` units (smaller shares do not pay for waking a thread), at most one
   per item, at least one. The pieces are fixed by the problem, so the count never
   changes results. */
static inline int fr_team_for(int n_threads, double work, double min_work, int items)
{
#ifndef _OPENMP
    (void)n_threads; (void)work; (void)min_work; (void)items;
    return 1;
#else
    int nt = n_threads < 1 ? 1 : n_threads;
    double cap = work / min_work;
    if (cap < nt) nt = cap < 1 ? 1 : (int)cap;
    return nt < items ? nt : (items < 1 ? 1 : items);
#endif
}

/* Denormals: gradients that fade over hundreds of steps pass through the subnormal range,
   where each multiply costs ~100 cycles (a 10x slower training step was measured). Inside
   its own threads, for the duration of a call only, the core flushes them to zero (FTZ and
   DAZ, as oneDNN and TensorFlow do); the caller's floating-point state is restored
   before returning, unlike -ffast-math which would change it for the whole process. */
#if defined(__SSE2__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FR_FTZ_ON() unsigned int fr_saved_csr = _mm_getcsr(); _mm_setcsr(fr_saved_csr | 0x8040u)
#define FR_FTZ_OFF() _mm_setcsr(fr_saved_csr)
#else
#define FR_FTZ_ON() do { } while (0)
#define FR_FTZ_OFF() do { } while (0)
#endif
#endif
