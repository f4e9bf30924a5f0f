/* Peak int8 dot-product (AVX-512 VNNI vpdpbusd), fp32 FMA and memory read bandwidth of this CPU, on 1..T threads.
   Built and run by benchmarks/bench_roofline.py. Prints one JSON object. */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACC 12  /* accumulators per thread */
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { long iters; const uint8_t *buf; size_t n; double sink; } Job;

/* 12 independent accumulators in named registers (an array would live on the stack) hide the latency.
   CHAINS(name, vector type, zero, reduce) defines a kernel from DECL_name, STEP_name and SUM_name. */
#define X12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define CHAINS(NAME, T, ZERO, REDUCE)                              \
  static void *NAME(void *p) {                                     \
    Job *j = p;                                                    \
    X12(DECL_##NAME)                                               \
    for (long i = 0; i < j->iters; i++) { X12(STEP_##NAME) }       \
    T s = ZERO;                                                    \
    X12(SUM_##NAME)                                                \
    j->sink = REDUCE(s);                                           \
    return 0;                                                      \
  }
#define DECL_vnni(k) __m512i c##k = _mm512_set1_epi32(k);
#define STEP_vnni(k) c##k = _mm512_dpbusd_epi32(c##k, _mm512_set1_epi8(3), _mm512_set1_epi8(5));
#define SUM_vnni(k) s = _mm512_add_epi32(s, c##k);
#define DECL_fma32(k) __m512 c##k = _mm512_set1_ps((float)k);
#define STEP_fma32(k) c##k = _mm512_fmadd_ps(c##k, _mm512_set1_ps(1.0000001f), _mm512_set1_ps(1e-7f));
#define SUM_fma32(k) s = _mm512_add_ps(s, c##k);
CHAINS(vnni, __m512i, _mm512_setzero_si512(), _mm512_reduce_add_epi32)
CHAINS(fma32, __m512, _mm512_setzero_ps(), _mm512_reduce_add_ps)

static void *readbw(void *p) {  /* streams its slice once per iteration */
  Job *j = p; __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (long it = 0; it < j->iters; it++)
    for (size_t i = 0; i + 256 <= j->n; i += 256) {
      s0 = _mm512_add_epi64(s0, _mm512_load_si512(j->buf + i));
      s1 = _mm512_add_epi64(s1, _mm512_load_si512(j->buf + i + 64));
      s2 = _mm512_add_epi64(s2, _mm512_load_si512(j->buf + i + 128));
      s3 = _mm512_add_epi64(s3, _mm512_load_si512(j->buf + i + 192));
    }
  j->sink = _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3))); return 0;
}

static double run(void *(*f)(void *), int threads, long iters, const uint8_t *buf, size_t n) {
  pthread_t t[64]; Job j[64]; double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {  /* best of 5: the least disturbed run */
    double t0 = now();
    for (int i = 0; i < threads; i++) {
      j[i] = (Job){iters, buf ? buf + i * (n / threads) : 0, n / threads, 0};
      pthread_create(&t[i], 0, f, &j[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
    double dt = now() - t0; if (dt < best) best = dt;
  }
  return best;
}

int main(int argc, char **argv) {
  int T = argc > 1 ? atoi(argv[1]) : 2; size_t n = (size_t)1 << 30;  /* 1 GiB, far beyond any cache */
  uint8_t *buf = aligned_alloc(64, n); memset(buf, 1, n);
  long it = 20000000, mit = 4;
  printf("{\"threads\": [");
  for (int th = 1; th <= T; th++) {
    double v = run(vnni, th, it, 0, 0), f = run(fma32, th, it, 0, 0), m = run(readbw, th, mit, buf, n);
    printf("%s{\"n\": %d, \"int8_gmac_s\": %.1f, \"fp32_gflop_s\": %.1f, \"read_gb_s\": %.2f}", th > 1 ? ", " : "", th,
           th * (double)it * ACC * 64 / v / 1e9, th * (double)it * ACC * 16 * 2 / f / 1e9, (double)mit * n / m / 1e9);
  }
  printf("]}\n"); free(buf); return 0;
}
