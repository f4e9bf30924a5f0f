"""etlite's torch-free runtime copy (guard.runtime.etlite_notorch): the ELF edit, the symbol check, no libtorch
mapped after a classification, and the process orders where torch or executorch's own bindings are loaded too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.runtime import etlite, etlite_notorch

TORCH_LIBS = ("libtorch_cpu.so", "libtorch.so", "libtorch_python.so")


def _portable() -> Path:
    return etlite.wheel_paths(etlite.executorch_dir())["portable"]


def test_strip_needed_removes_torch_soname_runpath(tmp_path):
    src = _portable()
    assert set(TORCH_LIBS) <= set(etlite_notorch.needed(src))
    out = tmp_path / "rt.so"
    etlite_notorch.strip_needed(src, out, etlite_notorch.DROPPED)
    left = etlite_notorch.needed(out)
    assert not set(TORCH_LIBS) & set(left)
    assert "libc10.so" in left and "libqnn_executorch_backend.so" in left
    tags = etlite_notorch.tags(out)
    assert etlite_notorch.DT_SONAME in etlite_notorch.tags(src)
    assert etlite_notorch.DT_SONAME not in tags and etlite_notorch.DT_RUNPATH not in tags
    assert len(tags) == len(etlite_notorch.tags(src)) - 5  # three libraries, SONAME, RUNPATH
    assert out.stat().st_size == src.stat().st_size  # entries move up in place; nothing else changes
    assert etlite_notorch.symbols(out) == etlite_notorch.symbols(src)


def test_strip_needed_refuses_a_library_not_listed(tmp_path):
    with pytest.raises(etlite_notorch.ElfError, match="does not list"):
        etlite_notorch.strip_needed(_portable(), tmp_path / "rt.so", ("libnot_there.so",))


def test_check_names_a_missing_symbol(tmp_path):
    lib = etlite.wheel_paths(etlite.executorch_dir())["quantized"]
    with pytest.raises(etlite_notorch.ElfError, match="pthreadpool_create"):
        etlite_notorch.check(lib, {"pthreadpool_create"})


@pytest.mark.slow
def test_build_defines_every_symbol_taken_from_libtorch(tmp_path, monkeypatch):
    """prepare lists what the wheel's runtime took from libtorch (the thread pool, BLAS, the pybind layer's torch
    calls); the built etlite defines all of it, and links the copy, not the wheel's _portable_lib."""
    if not etlite_notorch.supported():
        pytest.skip("x86-64 Linux only")
    et = etlite.executorch_dir()
    required = etlite_notorch.prepare(_portable(), et, tmp_path / "rt.so", tmp_path / "core.so")
    assert {"pthreadpool_create", "pthreadpool_parallelize_2d_tile_2d_dynamic", "sgemm_"} <= required
    path = etlite.build(et, notorch=True)
    etlite_notorch.check(path, required)
    assert [n for n in etlite_notorch.needed(path) if n.startswith("etlite-rt-")]
    assert not [n for n in etlite_notorch.needed(path) if "portable_lib" in n or "torch" in n]


def _mini() -> Path:
    from guard.defaults import mini_dir

    pte = mini_dir() / "model.pte"
    if not pte.is_file():
        pytest.skip(f"guard-mini is not built at {pte} (guard mini build)")
    if not etlite_notorch.supported():
        pytest.skip("x86-64 Linux only")
    return pte


# One process, one order of loading: etlite (the torch-free copy), torch, executorch's Python bindings.
SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np

def mapped():
    names = {Path(l.split(maxsplit=5)[-1].strip()).name for l in open("/proc/self/maps") if l.count(" ") >= 5}
    return sorted(n for n in names if n.startswith(("libtorch", "etlite-", "_portable_lib", "libc10", "libqnn")))

def logits(runner, tokens):
    out = runner.prefill(tokens, 0)
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float32)

order, pte = sys.argv[1], Path(sys.argv[2])
from guard.runtime.pte import PteRunner, load_program
report = {}
if order == "torch_first":
    import torch
    import executorch.kernels.quantized  # the wheel's runtime and its embedding_4bit, as load_program does
    py = PteRunner(pte, program=load_program(pte))
import guard
g = guard.load(pte=str(pte))
report["p_unsafe"] = g.classify("How do I pick a lock?").p_unsafe
et = PteRunner(pte)
tokens = et.tokenizer.encode("hello world, how are you today?")
a = logits(et, tokens)
report["maps_after_etlite"] = mapped()
if order == "torch_after":
    import torch
    x = torch.randn(64, 64)
    report["torch_ok"] = bool(torch.allclose(x @ torch.eye(64), x))
    report["same_after_torch"] = bool(np.array_equal(a, logits(et, tokens)))
    report["p_unsafe_after_torch"] = g.classify("How do I pick a lock?").p_unsafe
if order in ("bindings_after", "torch_first"):
    if order == "bindings_after":
        py = PteRunner(pte, program=load_program(pte))
    report["bindings_equal"] = bool(np.array_equal(a, logits(py, tokens)))
    report["etlite_again_equal"] = bool(np.array_equal(a, logits(et, tokens)))
if order == "fork":  # the runtime recreates its thread pool in a child (pthread_atfork); the child's pool is ours
    import os
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(g.classify("How do I pick a lock?").p_unsafe).encode())
        os._exit(0)
    os.close(w)
    report["child_p_unsafe"] = json.loads(os.read(r, 100))
    report["child_status"] = os.waitpid(pid, 0)[1]
report["maps_end"] = mapped()
print(json.dumps(report))
"""


def _run(order: str, pte: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GUARD_ETLITE_TORCH", None)
    env.pop("GUARD_NO_ETLITE", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, order, str(pte)], capture_output=True, text=True, env=env,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_classify_maps_no_libtorch():
    """A fresh process that classifies through etlite maps the torch-free copy and none of libtorch*."""
    r = _run("plain", _mini())
    assert [n for n in r["maps_end"] if n.startswith("etlite-rt-")], r
    assert not [n for n in r["maps_end"] if n.startswith(TORCH_LIBS)], r
    assert not [n for n in r["maps_end"] if n.startswith("_portable_lib")], r


@pytest.mark.slow
def test_fork_after_etlite():
    """A child forked after etlite ran classifies with the same result (its thread pool is recreated)."""
    r = _run("fork", _mini())
    assert r["child_status"] == 0 and r["child_p_unsafe"] == r["p_unsafe"], r


@pytest.mark.slow
def test_import_torch_after_etlite():
    """torch imported after etlite works, and etlite's results do not change (two thread pools, one process)."""
    r = _run("torch_after", _mini())
    assert not [n for n in r["maps_after_etlite"] if n.startswith(TORCH_LIBS)], r
    assert "libtorch_cpu.so" in r["maps_end"], r
    assert r["torch_ok"] and r["same_after_torch"], r
    assert r["p_unsafe_after_torch"] == r["p_unsafe"]


@pytest.mark.slow
def test_executorch_bindings_after_etlite():
    """executorch's Python bindings loaded after etlite: two runtimes in one process; the bindings' program (with
    the wheel's embedding_4bit, registered into the wheel's runtime) and etlite's give bit-identical logits."""
    r = _run("bindings_after", _mini())
    assert [n for n in r["maps_end"] if n.startswith("_portable_lib")], r
    assert [n for n in r["maps_end"] if n.startswith("etlite-rt-")], r
    assert r["bindings_equal"] and r["etlite_again_equal"], r


@pytest.mark.slow
def test_etlite_after_torch_and_bindings():
    """torch and the bindings first, etlite (still the torch-free copy) after: the same logits both ways."""
    r = _run("torch_first", _mini())
    assert [n for n in r["maps_after_etlite"] if n.startswith("etlite-rt-")], r
    assert r["bindings_equal"] and r["etlite_again_equal"], r
    assert r["p_unsafe"] == _run("plain", _mini())["p_unsafe"]


@pytest.mark.slow
def test_current_build_reads_no_symbol_tables(monkeypatch):
    """Once built, build() neither rereads libtorch's symbol tables (430 MB; reading them raised the 1B run's peak
    RSS by 150 MiB) nor rewrites the copies."""
    if not etlite_notorch.supported():
        pytest.skip("x86-64 Linux only")
    et = etlite.executorch_dir()
    path = etlite.build(et, notorch=True)

    def fail(*a, **k):
        raise AssertionError("prepare ran for a current build")

    monkeypatch.setattr(etlite_notorch, "prepare", fail)
    assert etlite.build(et, notorch=True) == path


POOL_TEST = r"""
// Every parallelize_* variant of etlite_pool.cpp covers each cell of its grid exactly once, with thread ids below
// the pool's count and FTZ/DAZ set inside the call only when asked.
#include <xmmintrin.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <vector>
extern "C" {
void* pthreadpool_create(size_t);
void pthreadpool_destroy(void*);
size_t pthreadpool_get_threads_count(void*);
#define P(name, ...) void name(void*, void*, void*, __VA_ARGS__, uint32_t);
P(pthreadpool_parallelize_1d, size_t)
P(pthreadpool_parallelize_1d_with_thread, size_t)
P(pthreadpool_parallelize_1d_tile_1d, size_t, size_t)
P(pthreadpool_parallelize_1d_tile_1d_dynamic_with_thread, size_t, size_t)
P(pthreadpool_parallelize_2d, size_t, size_t)
P(pthreadpool_parallelize_2d_tile_1d_dynamic_with_thread, size_t, size_t, size_t)
P(pthreadpool_parallelize_2d_tile_2d, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_2d_tile_2d_dynamic_with_thread, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_3d, size_t, size_t, size_t)
P(pthreadpool_parallelize_3d_tile_1d_with_thread, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_3d_tile_2d, size_t, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_3d_tile_2d_dynamic_with_thread, size_t, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_4d, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_4d_tile_2d, size_t, size_t, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_5d, size_t, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_5d_tile_2d, size_t, size_t, size_t, size_t, size_t, size_t, size_t)
P(pthreadpool_parallelize_6d_tile_2d, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t)
}
struct Grid {
  size_t r[6];
  size_t threads;
  bool ftz;
  std::vector<std::atomic<int>> hits;
  std::atomic<int> bad{0};
  Grid(std::initializer_list<size_t> d, size_t t, bool f) : threads(t), ftz(f), hits(1) {
    size_t n = 1, i = 0;
    for (size_t x : d) r[i++] = x, n *= x;
    for (; i < 6; i++) r[i] = 1;
    hits = std::vector<std::atomic<int>>(n);
  }
  // cells [s[k], s[k] + c[k]) of each dimension
  void mark(size_t th, const size_t* s, const size_t* c) {
    if (th >= threads) bad++;
    if (((_mm_getcsr() & 0x8040) == 0x8040) != ftz) bad++;
    for (size_t a = s[0]; a < s[0] + c[0]; a++) for (size_t b = s[1]; b < s[1] + c[1]; b++)
    for (size_t d = s[2]; d < s[2] + c[2]; d++) for (size_t e = s[3]; e < s[3] + c[3]; e++)
    for (size_t f = s[4]; f < s[4] + c[4]; f++) for (size_t g = s[5]; g < s[5] + c[5]; g++)
      hits[((((a * r[1] + b) * r[2] + d) * r[3] + e) * r[4] + f) * r[5] + g]++;
  }
  bool ok() { for (auto& h : hits) if (h != 1) return false; return bad == 0; }
};
#define G static_cast<Grid*>(ctx)
static const size_t one[6] = {1, 1, 1, 1, 1, 1};
using Call = void (*)(void* pool, Grid* g, uint32_t flags);
struct Case { const char* name; std::initializer_list<size_t> dims; Call call; };
int main() {
  const Case cases[] = {
    {"1d", {37}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_1d(p, (void*)+[](void* ctx, size_t i) { size_t s[6] = {i}; G->mark(0, s, one); }, g, 37, f); }},
    {"1d_with_thread", {37}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_1d_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i) { size_t s[6] = {i}; G->mark(t, s, one); }, g, 37, f); }},
    {"1d_tile_1d", {37}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_1d_tile_1d(p, (void*)+[](void* ctx, size_t i, size_t n) {
        size_t s[6] = {i}, c[6] = {n, 1, 1, 1, 1, 1}; G->mark(0, s, c); }, g, 37, 5, f); }},
    {"1d_tile_1d_dynamic_with_thread", {37}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_1d_tile_1d_dynamic_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i, size_t n) {
        size_t s[6] = {i}, c[6] = {n, 1, 1, 1, 1, 1}; G->mark(t, s, c); }, g, 37, 4, f); }},
    {"2d", {5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_2d(p, (void*)+[](void* ctx, size_t i, size_t j) { size_t s[6] = {i, j}; G->mark(0, s, one); }, g, 5, 7, f); }},
    {"2d_tile_1d_dynamic_with_thread", {5, 11}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_2d_tile_1d_dynamic_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i, size_t j, size_t n) {
        size_t s[6] = {i, j}, c[6] = {1, n, 1, 1, 1, 1}; G->mark(t, s, c); }, g, 5, 11, 3, f); }},
    {"2d_tile_2d", {9, 11}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_2d_tile_2d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t ni, size_t nj) {
        size_t s[6] = {i, j}, c[6] = {ni, nj, 1, 1, 1, 1}; G->mark(0, s, c); }, g, 9, 11, 2, 3, f); }},
    {"2d_tile_2d_dynamic_with_thread", {9, 11}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_2d_tile_2d_dynamic_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i, size_t j, size_t ni, size_t nj) {
        size_t s[6] = {i, j}, c[6] = {ni, nj, 1, 1, 1, 1}; G->mark(t, s, c); }, g, 9, 11, 4, 3, f); }},
    {"3d", {3, 4, 5}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_3d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k) {
        size_t s[6] = {i, j, k}; G->mark(0, s, one); }, g, 3, 4, 5, f); }},
    {"3d_tile_1d_with_thread", {3, 4, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_3d_tile_1d_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i, size_t j, size_t k, size_t n) {
        size_t s[6] = {i, j, k}, c[6] = {1, 1, n, 1, 1, 1}; G->mark(t, s, c); }, g, 3, 4, 7, 3, f); }},
    {"3d_tile_2d", {3, 5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_3d_tile_2d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t nj, size_t nk) {
        size_t s[6] = {i, j, k}, c[6] = {1, nj, nk, 1, 1, 1}; G->mark(0, s, c); }, g, 3, 5, 7, 2, 3, f); }},
    {"3d_tile_2d_dynamic_with_thread", {3, 5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_3d_tile_2d_dynamic_with_thread(p, (void*)+[](void* ctx, size_t t, size_t i, size_t j, size_t k, size_t nj, size_t nk) {
        size_t s[6] = {i, j, k}, c[6] = {1, nj, nk, 1, 1, 1}; G->mark(t, s, c); }, g, 3, 5, 7, 2, 4, f); }},
    {"4d", {2, 3, 4, 5}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_4d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t l) {
        size_t s[6] = {i, j, k, l}; G->mark(0, s, one); }, g, 2, 3, 4, 5, f); }},
    {"4d_tile_2d", {2, 3, 5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_4d_tile_2d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t l, size_t nk, size_t nl) {
        size_t s[6] = {i, j, k, l}, c[6] = {1, 1, nk, nl, 1, 1}; G->mark(0, s, c); }, g, 2, 3, 5, 7, 2, 3, f); }},
    {"5d", {2, 3, 2, 3, 4}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_5d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t l, size_t m) {
        size_t s[6] = {i, j, k, l, m}; G->mark(0, s, one); }, g, 2, 3, 2, 3, 4, f); }},
    {"5d_tile_2d", {2, 3, 2, 5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_5d_tile_2d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t l, size_t m, size_t nl, size_t nm) {
        size_t s[6] = {i, j, k, l, m}, c[6] = {1, 1, 1, nl, nm, 1}; G->mark(0, s, c); }, g, 2, 3, 2, 5, 7, 2, 3, f); }},
    {"6d_tile_2d", {2, 2, 3, 2, 5, 7}, [](void* p, Grid* g, uint32_t f) {
      pthreadpool_parallelize_6d_tile_2d(p, (void*)+[](void* ctx, size_t i, size_t j, size_t k, size_t l, size_t m, size_t n, size_t nm, size_t nn) {
        size_t s[6] = {i, j, k, l, m, n}, c[6] = {1, 1, 1, 1, nm, nn}; G->mark(0, s, c); }, g, 2, 2, 3, 2, 5, 7, 2, 3, f); }},
  };
  int failures = 0;
  for (size_t threads : {0, 1, 2, 3}) {  // 0: no pool (serial on the caller)
    void* pool = threads ? pthreadpool_create(threads) : nullptr;
    if (pool && pthreadpool_get_threads_count(pool) != threads) { printf("FAIL threads_count\n"); failures++; }
    for (int ftz = 0; ftz < 2; ftz++)
      for (const Case& c : cases) {
        Grid g(c.dims, threads ? threads : 1, ftz);
        c.call(pool, &g, ftz);
        if (!g.ok()) { printf("FAIL %s threads=%zu ftz=%d\n", c.name, threads, ftz); failures++; }
      }
    if (_mm_getcsr() & 0x8040) { printf("FAIL FTZ/DAZ left set\n"); failures++; }
    if (pool) pthreadpool_destroy(pool);
  }
  printf("%s\n", failures ? "FAILED" : "OK");
  return failures != 0;
}
"""


@pytest.mark.slow
def test_pool_covers_every_cell_once(tmp_path):
    """etlite_pool.cpp against pthreadpool's contract: each variant visits every cell of its grid exactly once
    (tiles, remainders, 1-3 threads, no pool), thread ids stay below the count, FTZ/DAZ only when asked."""
    src = tmp_path / "pool_test.cpp"
    src.write_text(POOL_TEST)
    exe = tmp_path / "pool_test"
    pool = Path(etlite.__file__).with_name("etlite_pool.cpp")
    r = subprocess.run(["g++", "-O1", "-std=c++17", "-pthread", str(src), str(pool), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout[-2000:]


BLAS_SCRIPT = r"""
import ctypes, json
from pathlib import Path
from guard.runtime import etlite
lib = etlite.library()
maps = lambda: {Path(l.split(maxsplit=5)[-1].strip()).name for l in open("/proc/self/maps") if l.count(" ") >= 5}
before = "libtorch_cpu.so" in maps()
f, i = ctypes.c_float, ctypes.c_int
a, b, c = (f * 4)(1, 2, 3, 4), (f * 4)(5, 6, 7, 8), (f * 4)()
n, one, zero = i(2), f(1), f(0)
lib.sgemm_(b"N", b"N", ctypes.byref(n), ctypes.byref(n), ctypes.byref(n), ctypes.byref(one), a, ctypes.byref(n), b,
           ctypes.byref(n), ctypes.byref(zero), c, ctypes.byref(n), ctypes.c_size_t(1), ctypes.c_size_t(1))
print(json.dumps({"built": etlite.BUILT, "before": before, "after": "libtorch_cpu.so" in maps(), "c": list(c)}))
"""


@pytest.mark.slow
def test_blas_forwards_to_libtorch_on_first_use():
    """BLAS (which no guard model calls) still works: the first sgemm_ loads libtorch_cpu and calls its sgemm_."""
    if not etlite_notorch.supported():
        pytest.skip("x86-64 Linux only")
    env = {k: v for k, v in os.environ.items() if k not in ("GUARD_ETLITE_TORCH", "GUARD_NO_ETLITE")}
    r = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not out["before"] and out["after"], out
    # column-major 2x2: [[1,3],[2,4]] @ [[5,7],[6,8]] = [[23,31],[34,46]]
    assert out["c"] == [23.0, 34.0, 31.0, 46.0], out


def test_failed_copy_is_remembered(tmp_path, monkeypatch):
    """A copy that cannot be made marks the build rejected: later starts raise at once (and use the old link)
    instead of reading libtorch's tables and compiling again."""
    import guard.defaults

    monkeypatch.setattr(guard.defaults, "HOME", tmp_path)
    calls = []

    def prepare(*a):
        calls.append(a)
        raise etlite_notorch.ElfError("not a little-endian ELF64 file")

    monkeypatch.setattr(etlite_notorch, "prepare", prepare)
    et = etlite.executorch_dir()
    with pytest.raises(etlite_notorch.ElfError):
        etlite.build(et, notorch=True)
    assert [p.name for p in (tmp_path / "etlite").glob("*.rejected")]
    with pytest.raises(RuntimeError, match="could not be built before"):
        etlite.build(et, notorch=True)
    assert len(calls) == 1
