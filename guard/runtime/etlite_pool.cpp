// pthreadpool for etlite's torch-free runtime (guard/runtime/etlite_notorch.py).
//
// The executorch wheel's _portable_lib takes pthreadpool (the thread pool XNNPACK and the threadpool extension run
// on) from libtorch_cpu.so. etlite's private copy of _portable_lib has that dependency removed, so etlite defines
// the pthreadpool_* functions the runtime calls; the copy resolves them here, in its own load scope (the copy is
// loaded RTLD_LOCAL as etlite's dependency, so torch's pthreadpool and this one never see each other).
//
// Semantics follow pthreadpool's public header: every parallelize_* call returns when all items are done; the
// calling thread is thread 0 and works too; *_with_thread passes the thread index (< get_threads_count); *_dynamic
// variants may pass any multiple of the tile, here exactly one tile per call (one call per item of work).
// PTHREADPOOL_FLAG_DISABLE_DENORMALS sets FTZ/DAZ on every participating thread for the call, like pthreadpool.
// The executor API (pthreadpool_create_v2 and friends) is used by XNNPACK only with an external scheduler, which
// ExecuTorch never passes: those abort with a message.
//
// Compiled only into the torch-free build: -DETLITE_NOTORCH (see etlite_notorch.py).
#include <pthread.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace {

constexpr uint32_t kDisableDenormals = 1;
// Pauses a waiting thread spins before it sleeps (XNNPACK calls the pool once per operator, back to back; a futex wake
// costs tens of microseconds). Measured on the 1B shape, bench_1b_shape.py, 2 threads, load ~1.4: no spin 45.8 tok/s
// decode, 324 ms verdict; 65536 pauses 68.5 tok/s, 274 ms; libtorch's pthreadpool (GUARD_ETLITE_TORCH=1) 64.2 tok/s,
// 261 ms. Under heavy load (2.7 on 2 cores) spinning cost guard-mini decode speed (8192: 76-79 against 92-116 tok/s).
#ifndef ETLITE_POOL_SPIN
#define ETLITE_POOL_SPIN 65536
#endif
constexpr int kSpin = ETLITE_POOL_SPIN;

using Body = void (*)(const void* job, size_t thread, size_t item);

struct Pool {
  size_t threads = 1;  // including the caller
  std::vector<std::thread> workers;
  std::mutex call;  // one parallelize_* at a time, like pthreadpool
  std::mutex m;     // guards joining and closing a call
  std::condition_variable wake, done;
  std::atomic<uint64_t> generation{0};  // one per call, advanced under m
  uint64_t closed = 0;                  // the call the caller has finished: workers waking later stay out of it
  std::atomic<bool> stop{false};
  // The current call.
  Body body = nullptr;
  const void* job = nullptr;
  size_t items = 0;
  uint32_t flags = 0;
  std::atomic<size_t> next{0};
  std::atomic<size_t> entered{0};  // workers inside the current call
};

void work(Pool* p, size_t thread) {
  unsigned csr = _mm_getcsr();
  if (p->flags & kDisableDenormals) _mm_setcsr(csr | 0x8040);  // FTZ | DAZ
  // Items are taken in runs of about an eighth of a thread's share: one shared counter per item made the threads
  // trade its cache line on every small tile.
  const size_t n = p->items, run = std::max<size_t>(1, n / (p->threads * 8));
  for (size_t s; (s = p->next.fetch_add(run, std::memory_order_relaxed)) < n;)
    for (size_t i = s, e = std::min(n, s + run); i < e; i++) p->body(p->job, thread, i);
  if (p->flags & kDisableDenormals) _mm_setcsr(csr);
}

// A worker joins a call only while it is open, so the caller never waits for a thread the scheduler has not run yet
// (on a loaded machine that wait cost more than the work).
void worker(Pool* p, size_t thread) {
  uint64_t seen = 0;
  for (;;) {
    for (int i = 0; i < kSpin && p->generation.load() == seen && !p->stop.load(); i++) _mm_pause();
    {
      std::unique_lock<std::mutex> lock(p->m);
      p->wake.wait(lock, [&] { return p->stop.load() || p->generation.load() != seen; });
      if (p->stop.load()) return;
      seen = p->generation.load();
      if (p->closed == seen) continue;
      p->entered.fetch_add(1);
    }
    work(p, thread);
    if (p->entered.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(p->m);
      p->done.notify_one();
    }
  }
}

// Runs body(job, thread, item) for item in [0, items) on the pool (serially on the caller without one).
void run(Pool* p, uint32_t flags, size_t items, Body body, const void* job) {
  if (!p || p->threads <= 1 || items <= 1) {
    unsigned csr = _mm_getcsr();
    if (flags & kDisableDenormals) _mm_setcsr(csr | 0x8040);
    for (size_t i = 0; i < items; i++) body(job, 0, i);
    if (flags & kDisableDenormals) _mm_setcsr(csr);
    return;
  }
  std::lock_guard<std::mutex> serial(p->call);
  {
    std::lock_guard<std::mutex> lock(p->m);
    p->body = body, p->job = job, p->items = items, p->flags = flags;
    p->next.store(0);
    p->generation.fetch_add(1);
  }
  p->wake.notify_all();
  work(p, 0);
  {
    std::lock_guard<std::mutex> lock(p->m);
    p->closed = p->generation.load();
  }
  for (int i = 0; i < kSpin && p->entered.load() != 0; i++) _mm_pause();
  std::unique_lock<std::mutex> lock(p->m);
  p->done.wait(lock, [&] { return p->entered.load() == 0; });
}

// f(thread, item) through run().
template <class F>
void each(void* pool, uint32_t flags, size_t items, const F& f) {
  run(static_cast<Pool*>(pool), flags, items,
      [](const void* job, size_t thread, size_t item) { (*static_cast<const F*>(job))(thread, item); }, &f);
}

size_t tiles(size_t range, size_t tile) { return tile ? (range + tile - 1) / tile : 0; }

[[noreturn]] void unsupported(const char* name) {
  fprintf(stderr, "guard etlite: %s is not supported by etlite's torch-free runtime (GUARD_ETLITE_TORCH=1 uses "
                  "the wheel's runtime)\n", name);
  abort();
}

}  // namespace

// The thread index is passed as size_t: callers declare it uint32_t or size_t, both read it from one register.
typedef void (*f1)(void*, size_t);
typedef void (*f2)(void*, size_t, size_t);
typedef void (*f3)(void*, size_t, size_t, size_t);
typedef void (*f4)(void*, size_t, size_t, size_t, size_t);
typedef void (*f5)(void*, size_t, size_t, size_t, size_t, size_t);
typedef void (*f6)(void*, size_t, size_t, size_t, size_t, size_t, size_t);
typedef void (*f7)(void*, size_t, size_t, size_t, size_t, size_t, size_t, size_t);
typedef void (*f8)(void*, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t);

extern "C" {

void* pthreadpool_create(size_t n) {
  if (n == 0) n = std::max<long>(1, sysconf(_SC_NPROCESSORS_ONLN));
  auto* p = new Pool;
  p->threads = n;
  for (size_t t = 1; t < n; t++) p->workers.emplace_back(worker, p, t);
  return p;
}

void pthreadpool_destroy(void* pool) {
  auto* p = static_cast<Pool*>(pool);
  if (!p) return;
  {
    std::lock_guard<std::mutex> lock(p->m);
    p->stop.store(true);
  }
  p->wake.notify_all();
  for (auto& w : p->workers) w.join();
  delete p;
}

size_t pthreadpool_get_threads_count(void* pool) { return pool ? static_cast<Pool*>(pool)->threads : 1; }

void* pthreadpool_create_v2(void*, size_t) { unsupported("pthreadpool_create_v2"); }
void pthreadpool_update_executor(void*, void*) { unsupported("pthreadpool_update_executor"); }
void pthreadpool_release_executor_threads(void*) { unsupported("pthreadpool_release_executor_threads"); }

void pthreadpool_parallelize_1d(void* p, f1 f, void* c, size_t r, uint32_t fl) {
  each(p, fl, r, [&](size_t, size_t i) { f(c, i); });
}
void pthreadpool_parallelize_1d_with_thread(void* p, f2 f, void* c, size_t r, uint32_t fl) {
  each(p, fl, r, [&](size_t t, size_t i) { f(c, t, i); });
}
void pthreadpool_parallelize_1d_tile_1d(void* p, f2 f, void* c, size_t r, size_t t, uint32_t fl) {
  each(p, fl, tiles(r, t), [&](size_t, size_t k) { size_t i = k * t; f(c, i, std::min(t, r - i)); });
}
void pthreadpool_parallelize_1d_tile_1d_dynamic(void* p, f2 f, void* c, size_t r, size_t t, uint32_t fl) {
  pthreadpool_parallelize_1d_tile_1d(p, f, c, r, t, fl);
}
void pthreadpool_parallelize_1d_tile_1d_dynamic_with_thread(void* p, f3 f, void* c, size_t r, size_t t, uint32_t fl) {
  each(p, fl, tiles(r, t), [&](size_t th, size_t k) { size_t i = k * t; f(c, th, i, std::min(t, r - i)); });
}

void pthreadpool_parallelize_2d(void* p, f2 f, void* c, size_t ri, size_t rj, uint32_t fl) {
  each(p, fl, ri * rj, [&](size_t, size_t k) { f(c, k / rj, k % rj); });
}
void pthreadpool_parallelize_2d_with_thread(void* p, f3 f, void* c, size_t ri, size_t rj, uint32_t fl) {
  each(p, fl, ri * rj, [&](size_t t, size_t k) { f(c, t, k / rj, k % rj); });
}
void pthreadpool_parallelize_2d_tile_1d(void* p, f3 f, void* c, size_t ri, size_t rj, size_t tj, uint32_t fl) {
  size_t nj = tiles(rj, tj);
  each(p, fl, ri * nj, [&](size_t, size_t k) { size_t j = k % nj * tj; f(c, k / nj, j, std::min(tj, rj - j)); });
}
void pthreadpool_parallelize_2d_tile_1d_dynamic(void* p, f3 f, void* c, size_t ri, size_t rj, size_t tj, uint32_t fl) {
  pthreadpool_parallelize_2d_tile_1d(p, f, c, ri, rj, tj, fl);
}
void pthreadpool_parallelize_2d_tile_1d_dynamic_with_thread(void* p, f4 f, void* c, size_t ri, size_t rj, size_t tj,
                                                            uint32_t fl) {
  size_t nj = tiles(rj, tj);
  each(p, fl, ri * nj, [&](size_t t, size_t k) { size_t j = k % nj * tj; f(c, t, k / nj, j, std::min(tj, rj - j)); });
}
void pthreadpool_parallelize_2d_tile_2d(void* p, f4 f, void* c, size_t ri, size_t rj, size_t ti, size_t tj,
                                        uint32_t fl) {
  size_t nj = tiles(rj, tj);
  each(p, fl, tiles(ri, ti) * nj, [&](size_t, size_t k) {
    size_t i = k / nj * ti, j = k % nj * tj;
    f(c, i, j, std::min(ti, ri - i), std::min(tj, rj - j));
  });
}
void pthreadpool_parallelize_2d_tile_2d_dynamic(void* p, f4 f, void* c, size_t ri, size_t rj, size_t ti, size_t tj,
                                                uint32_t fl) {
  pthreadpool_parallelize_2d_tile_2d(p, f, c, ri, rj, ti, tj, fl);
}
void pthreadpool_parallelize_2d_tile_2d_dynamic_with_thread(void* p, f5 f, void* c, size_t ri, size_t rj, size_t ti,
                                                            size_t tj, uint32_t fl) {
  size_t nj = tiles(rj, tj);
  each(p, fl, tiles(ri, ti) * nj, [&](size_t t, size_t k) {
    size_t i = k / nj * ti, j = k % nj * tj;
    f(c, t, i, j, std::min(ti, ri - i), std::min(tj, rj - j));
  });
}

void pthreadpool_parallelize_3d(void* p, f3 f, void* c, size_t ri, size_t rj, size_t rk, uint32_t fl) {
  each(p, fl, ri * rj * rk, [&](size_t, size_t x) { f(c, x / rk / rj, x / rk % rj, x % rk); });
}
void pthreadpool_parallelize_3d_tile_1d(void* p, f4 f, void* c, size_t ri, size_t rj, size_t rk, size_t tk,
                                        uint32_t fl) {
  size_t nk = tiles(rk, tk);
  each(p, fl, ri * rj * nk, [&](size_t, size_t x) {
    size_t k = x % nk * tk;
    f(c, x / nk / rj, x / nk % rj, k, std::min(tk, rk - k));
  });
}
void pthreadpool_parallelize_3d_tile_1d_with_thread(void* p, f5 f, void* c, size_t ri, size_t rj, size_t rk,
                                                    size_t tk, uint32_t fl) {
  size_t nk = tiles(rk, tk);
  each(p, fl, ri * rj * nk, [&](size_t t, size_t x) {
    size_t k = x % nk * tk;
    f(c, t, x / nk / rj, x / nk % rj, k, std::min(tk, rk - k));
  });
}
void pthreadpool_parallelize_3d_tile_1d_dynamic(void* p, f4 f, void* c, size_t ri, size_t rj, size_t rk, size_t tk,
                                                uint32_t fl) {
  pthreadpool_parallelize_3d_tile_1d(p, f, c, ri, rj, rk, tk, fl);
}
void pthreadpool_parallelize_3d_tile_1d_dynamic_with_thread(void* p, f5 f, void* c, size_t ri, size_t rj, size_t rk,
                                                            size_t tk, uint32_t fl) {
  pthreadpool_parallelize_3d_tile_1d_with_thread(p, f, c, ri, rj, rk, tk, fl);
}
void pthreadpool_parallelize_3d_tile_2d(void* p, f5 f, void* c, size_t ri, size_t rj, size_t rk, size_t tj, size_t tk,
                                        uint32_t fl) {
  size_t nj = tiles(rj, tj), nk = tiles(rk, tk);
  each(p, fl, ri * nj * nk, [&](size_t, size_t x) {
    size_t j = x / nk % nj * tj, k = x % nk * tk;
    f(c, x / nk / nj, j, k, std::min(tj, rj - j), std::min(tk, rk - k));
  });
}
void pthreadpool_parallelize_3d_tile_2d_dynamic(void* p, f5 f, void* c, size_t ri, size_t rj, size_t rk, size_t tj,
                                                size_t tk, uint32_t fl) {
  pthreadpool_parallelize_3d_tile_2d(p, f, c, ri, rj, rk, tj, tk, fl);
}
void pthreadpool_parallelize_3d_tile_2d_dynamic_with_thread(void* p, f6 f, void* c, size_t ri, size_t rj, size_t rk,
                                                            size_t tj, size_t tk, uint32_t fl) {
  size_t nj = tiles(rj, tj), nk = tiles(rk, tk);
  each(p, fl, ri * nj * nk, [&](size_t t, size_t x) {
    size_t j = x / nk % nj * tj, k = x % nk * tk;
    f(c, t, x / nk / nj, j, k, std::min(tj, rj - j), std::min(tk, rk - k));
  });
}

void pthreadpool_parallelize_4d(void* p, f4 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl, uint32_t fl) {
  each(p, fl, ri * rj * rk * rl, [&](size_t, size_t x) {
    size_t l = x % rl, k = x / rl % rk, j = x / rl / rk % rj, i = x / rl / rk / rj;
    f(c, i, j, k, l);
  });
}
void pthreadpool_parallelize_4d_tile_2d(void* p, f6 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl, size_t tk,
                                        size_t tl, uint32_t fl) {
  size_t nk = tiles(rk, tk), nl = tiles(rl, tl);
  each(p, fl, ri * rj * nk * nl, [&](size_t, size_t x) {
    size_t l = x % nl * tl, k = x / nl % nk * tk, j = x / nl / nk % rj, i = x / nl / nk / rj;
    f(c, i, j, k, l, std::min(tk, rk - k), std::min(tl, rl - l));
  });
}
void pthreadpool_parallelize_4d_tile_2d_dynamic(void* p, f6 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl,
                                                size_t tk, size_t tl, uint32_t fl) {
  pthreadpool_parallelize_4d_tile_2d(p, f, c, ri, rj, rk, rl, tk, tl, fl);
}

void pthreadpool_parallelize_5d(void* p, f5 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl, size_t rm,
                                uint32_t fl) {
  each(p, fl, ri * rj * rk * rl * rm, [&](size_t, size_t x) {
    size_t m = x % rm, l = x / rm % rl, k = x / rm / rl % rk, j = x / rm / rl / rk % rj, i = x / rm / rl / rk / rj;
    f(c, i, j, k, l, m);
  });
}
void pthreadpool_parallelize_5d_tile_2d(void* p, f7 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl, size_t rm,
                                        size_t tl, size_t tm, uint32_t fl) {
  size_t nl = tiles(rl, tl), nm = tiles(rm, tm);
  each(p, fl, ri * rj * rk * nl * nm, [&](size_t, size_t x) {
    size_t m = x % nm * tm, l = x / nm % nl * tl, rest = x / nm / nl;
    f(c, rest / rk / rj, rest / rk % rj, rest % rk, l, m, std::min(tl, rl - l), std::min(tm, rm - m));
  });
}
void pthreadpool_parallelize_6d_tile_2d(void* p, f8 f, void* c, size_t ri, size_t rj, size_t rk, size_t rl, size_t rm,
                                        size_t rn, size_t tm, size_t tn, uint32_t fl) {
  size_t nm = tiles(rm, tm), nn = tiles(rn, tn);
  each(p, fl, ri * rj * rk * rl * nm * nn, [&](size_t, size_t x) {
    size_t n = x % nn * tn, m = x / nn % nm * tm, rest = x / nn / nm;
    size_t l = rest % rl, k = rest / rl % rk, j = rest / rl / rk % rj, i = rest / rl / rk / rj;
    f(c, i, j, k, l, m, n, std::min(tm, rm - m), std::min(tn, rn - n));
  });
}

}  // extern "C"
