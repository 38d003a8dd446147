/* l1_resident.c — can part of a batch-1 step's W_hh stay in L1 while the rest streams
   from L2? (issue 11, target 3; a measurement, not used by fastrnn)

   A batch-1 step reads each thread's slice of W_hh once (LSTM 128 KB, GRU 96 KB at
   hidden 128 on 2 threads), four times the 32 KB L1, so all of it streams from L2.
   L1 has 64 sets of 8 ways (a 4 KB period). If the streamed part only occupies the
   first S bytes of every 4 KB and a resident part the rest, the stream cannot evict the
   resident lines, and each step reads `resident` KB fewer from L2. This program times
   one pass per "step" (16-wide FMAs over every 512-byte chunk) for that layout against a
   contiguous one; TSC ticks, minimum and mean of 20,000 passes, one core.

       gcc -O3 -mavx512f -mfma -funroll-loops bench/l1_resident.c -o /tmp/l1_resident
       /tmp/l1_resident 96 0 0          # 96 KB contiguous
       /tmp/l1_resident 96 20 1024      # 20 KB resident, the other 76 KB streamed
                                        # through the first 1 KB of every 4 KB page
       /tmp/l1_resident 96 20 1024 1    # the same, resident part read last */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <x86intrin.h>

#define CHUNK 512   /* bytes per pointer: one 16-wide FMA per 64 bytes */

__attribute__((noinline)) static __m512 pass(float **ptrs, int n, __m512 x)
{
    __m512 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
    for (int c = 0; c < n; c++) {
        const float *p = ptrs[c];
        for (int u = 0; u < 8; u++) acc[u] = _mm512_fmadd_ps(_mm512_load_ps(p + 16 * u), x, acc[u]);
    }
    for (int i = 1; i < 8; i++) acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return acc[0];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s total_kb resident_kb stream_bytes_per_4k [resident_last]\n", argv[0]);
        return 2;
    }
    const int total_kb = atoi(argv[1]), res_kb = atoi(argv[2]), stream_b = atoi(argv[3]);
    const int res_last = argc > 4 && atoi(argv[4]);
    if (total_kb <= res_kb || (res_kb && (stream_b < CHUNK || stream_b >= 4096 || stream_b % CHUNK))) {
        fprintf(stderr, "bad sizes\n");
        return 2;
    }
    char *buf = aligned_alloc(4096, 64 << 20);
    memset(buf, 0, 64 << 20);
    static float *ptrs[1 << 16], *res[1 << 16];
    int n = 0, nr = 0;
    if (res_kb == 0) {
        for (int i = 0; i < total_kb * 1024 / CHUNK; i++) ptrs[n++] = (float *)(buf + (size_t)i * CHUNK);
    } else {
        int pg = 0, off = stream_b;           /* resident chunks: [stream_b, 4096) of pages */
        for (int r = 0; r < res_kb * 1024; r += CHUNK) {
            res[nr++] = (float *)(buf + (size_t)pg * 4096 + off);
            off += CHUNK;
            if (off >= 4096) { off = stream_b; pg++; }
        }
        if (!res_last) for (int i = 0; i < nr; i++) ptrs[n++] = res[i];
        const int pages = (total_kb - res_kb) * 1024 / stream_b;   /* streamed: [0, stream_b) */
        for (int s = 0; s < pages; s++)
            for (int o = 0; o < stream_b; o += CHUNK) ptrs[n++] = (float *)(buf + (size_t)s * 4096 + o);
        if (res_last) for (int i = 0; i < nr; i++) ptrs[n++] = res[i];
    }
    __m512 x = _mm512_set1_ps(1.0f), r = _mm512_setzero_ps();
    unsigned long long best = ~0ull, tot = 0;
    const int iters = 20000, warm = 100;
    for (int it = 0; it < iters; it++) {
        const unsigned long long t0 = __rdtsc();
        r = _mm512_add_ps(r, pass(ptrs, n, x));
        const unsigned long long t1 = __rdtsc();
        if (it >= warm) { if (t1 - t0 < best) best = t1 - t0; tot += t1 - t0; }
    }
    float o[16];
    _mm512_storeu_ps(o, r);
    printf("%d KB, %d KB resident, streamed through %d bytes of each 4 KB%s: min %llu ticks "
           "(%.1f bytes/tick), mean %llu%s\n", total_kb, res_kb, stream_b,
           res_last ? " (resident last)" : "", best, total_kb * 1024.0 / best,
           tot / (iters - warm), o[0] == 0.0f ? "" : " ");
    free(buf);
    return 0;
}
