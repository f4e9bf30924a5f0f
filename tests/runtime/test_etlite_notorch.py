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
