/* machine_limits.c — the two ceilings a batch-1 recurrence step meets on one core: the
   read bandwidth of L1/L2 (an m = 1 product streams every weight once per step, 4 bytes
   per 2 flops) and the AVX-512 FMA peak. Best of many short trials: the machine may be
   shared, and the best trial is the one nobody interrupted.

       gcc -O2 bench/machine_limits.c -o /tmp/machine_limits && /tmp/machine_limits

   (x86-64 with AVX-512F; see bench/README.md, "Batch-1 latency".) */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
__attribute__((target("avx512f"),noinline)) float readbw(const float *a, size_t n, int reps){
  __m512 s0=_mm512_setzero_ps(),s1=s0,s2=s0,s3=s0,s4=s0,s5=s0,s6=s0,s7=s0;
  for(int r=0;r<reps;r++) for(size_t i=0;i<n;i+=128){
    s0=_mm512_add_ps(s0,_mm512_load_ps(a+i)); s1=_mm512_add_ps(s1,_mm512_load_ps(a+i+16));
    s2=_mm512_add_ps(s2,_mm512_load_ps(a+i+32)); s3=_mm512_add_ps(s3,_mm512_load_ps(a+i+48));
    s4=_mm512_add_ps(s4,_mm512_load_ps(a+i+64)); s5=_mm512_add_ps(s5,_mm512_load_ps(a+i+80));
    s6=_mm512_add_ps(s6,_mm512_load_ps(a+i+96)); s7=_mm512_add_ps(s7,_mm512_load_ps(a+i+112));}
  __m512 s=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0,s1),_mm512_add_ps(s2,s3)),_mm512_add_ps(_mm512_add_ps(s4,s5),_mm512_add_ps(s6,s7)));
  return _mm512_reduce_add_ps(s);
}
#define F(x) x=_mm512_fmadd_ps(x,b,c);
__attribute__((target("avx512f,fma"),noinline)) float fmapeak(long iters){
  __m512 b=_mm512_set1_ps(1.0000001f), c=_mm512_set1_ps(1e-7f);
  __m512 a0=_mm512_set1_ps(0),a1=_mm512_set1_ps(1),a2=_mm512_set1_ps(2),a3=_mm512_set1_ps(3),a4=_mm512_set1_ps(4),a5=_mm512_set1_ps(5),a6=_mm512_set1_ps(6),a7=_mm512_set1_ps(7),a8=_mm512_set1_ps(8),a9=_mm512_set1_ps(9),a10=_mm512_set1_ps(10),a11=_mm512_set1_ps(11);
  for(long k=0;k<iters;k++){F(a0)F(a1)F(a2)F(a3)F(a4)F(a5)F(a6)F(a7)F(a8)F(a9)F(a10)F(a11)}
  __m512 s=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)));
  s=_mm512_add_ps(s,_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)));
  return _mm512_reduce_add_ps(s);
}
int main(void){
  size_t sizes[]={16<<10,64<<10,128<<10,256<<10,320<<10,512<<10,1<<20,4<<20,64<<20};
  for(int s=0;s<9;s++){size_t bytes=sizes[s], n=bytes/4; float*a=aligned_alloc(64,bytes); for(size_t i=0;i<n;i++)a[i]=1e-9f*i;
    int reps=(int)((8LL<<20)/bytes); if(reps<1)reps=1; double best=1e30; volatile float sink;
    for(int t=0;t<(bytes>(8<<20)?5:400);t++){double t0=now(); sink=readbw(a,n,reps); double dt=now()-t0; if(dt<best)best=dt;}
    printf("read %8zu KB: %6.1f GB/s (best of short trials)\n", bytes>>10, (double)bytes*reps/best/1e9); free(a);}
  double best=1e30; volatile float sink; long it=200000;
  for(int t=0;t<400;t++){double t0=now(); sink=fmapeak(it); double dt=now()-t0; if(dt<best)best=dt;}
  printf("fma peak: %.1f GFLOP/s (%.2f G zmm-FMA/s)\n", it*12.0*32/best/1e9, it*12.0/best/1e9);
}
