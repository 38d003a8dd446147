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
#endif
