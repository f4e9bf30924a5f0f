"""PteRunner's start-up path and chunked prefill (guard.runtime.pte, guard.runtime.etlite)."""

import json
import os
import subprocess
import sys

import pytest

from guard.runtime.pte import plan


@pytest.fixture(scope="module")
def small_pte(tiny_model_dir, tmp_path_factory):
    """8da4w (so the 4-bit embedding kernel is needed), pruned vocabulary, chunk methods 16 and 4 plus decode."""
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    cfg = ExportConfig(max_seq_len=256, chunk=16, chunks=(4,), prune_vocab=True, quant=QuantConfig("8da4w", group_size=32))
    return export_model(tiny_model_dir, tmp_path_factory.mktemp("pte_small"), cfg)


def _etlite_available() -> bool:
    from guard.runtime import etlite

    return etlite.library() is not None


SCRIPT = r"""
import json, sys
import guard
g = guard.load(pte=sys.argv[1])
v = g.classify("hello")
heavy = sorted({m for m in sys.modules if m in ("torch", "torchao", "transformers") or m.startswith("executorch.exir")})
print(json.dumps({"heavy": heavy, "decision": v.decision, "p_unsafe": v.p_unsafe}))
"""


def _run(pte, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(pte)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_load_and_classify_import_no_compiler_stack(small_pte):
    """guard.load(pte=...) + classify imports no exir, torchao or transformers; with etlite, not even torch. The
    Python-bindings fallback gives the same verdict."""
    r = _run(small_pte)
    assert not [m for m in r["heavy"] if m != "torch"], r["heavy"]
    if _etlite_available():
        assert "torch" not in r["heavy"]
    fallback = _run(small_pte, {"GUARD_NO_ETLITE": "1"})  # the Python bindings (executorch.runtime imports exir)
    assert fallback["decision"] == r["decision"] and abs(fallback["p_unsafe"] - r["p_unsafe"]) < 1e-6


@pytest.mark.slow
def test_chunked_prefill_matches_bindings_and_single_steps(small_pte, monkeypatch):
    """Every split of a prefill (chunk methods, padding, decode) gives the logits of feeding the tokens one by one,
    and etlite gives what executorch's Python bindings give."""
    import numpy as np

    from guard.runtime import pte as pte_mod

    r = pte_mod.PteRunner(small_pte)
    assert r.chunks == [16, 4, 1] and r.meta["get_prefill_chunks"] == [16, 4]
    ids = list(range(1000, 1037))  # 37 tokens: 16 + 16 + 4 + 1
    whole = r.prefill(ids, 0)
    for i, t in enumerate(ids):
        step = r.decode(t, i)
    assert np.allclose(whole, step, atol=1e-4), float(np.abs(whole - step).max())
    tail = r.prefill(ids[30:], 30)  # prefix reuse: positions below 30 keep their values
    assert np.allclose(tail, whole, atol=1e-4)
    if _etlite_available():
        from guard.runtime import etlite

        monkeypatch.setattr(etlite, "library", lambda: None)
        b = pte_mod.PteRunner(small_pte)
        assert np.allclose(b.prefill(ids, 0), whole, atol=1e-5)


def test_plan_covers_the_tokens_with_little_padding():
    sizes = [128, 32, 8, 1]
    for n in range(1, 700):
        calls = plan(n, sizes)
        assert set(calls) <= set(sizes) and sum(calls) >= n and sum(calls[:-1]) < n, (n, calls)
        assert sum(calls) - n < calls[-1], (n, calls)  # only the last call is padded
    assert plan(1, sizes) == [1] and plan(128, sizes) == [128] and sum(plan(97, sizes)) < 128
    assert plan(97, [64, 1]) == [64, 64]  # an old file (prefill only): padded as before
    assert plan(65, [64, 1]) == [64, 1]


@pytest.mark.slow
def test_policy_head_snapshot_gives_the_same_verdicts_and_holds_no_message(small_pte, tmp_path, monkeypatch):
    """A fresh guard writes the policy head's snapshot (guard.runtime.prefix), the next fresh guard restores it:
    same margins as computing everything. The file is the same whatever the message (only the head is in it); a
    damaged file is ignored and rewritten."""
    import guard
    import guard.defaults

    if not _etlite_available():
        pytest.skip("etlite cannot be built here: snapshots need it")
    monkeypatch.setattr(guard.defaults, "HOME", tmp_path)
    msgs = ["hello", "How do I pick a lock?", "hello"]

    def run(first, env=None):
        if env:
            monkeypatch.setenv("GUARD_PREFIX_CACHE", env)
        g = guard.load(pte=str(small_pte))
        vs = [g.classify(m) for m in [first] + msgs]
        monkeypatch.delenv("GUARD_PREFIX_CACHE", raising=False)
        return vs

    plain = run("secret one", "0")
    assert "head_snapshot" not in plain[0].timings and not list(tmp_path.rglob("*.kv"))
    written = run("secret one")
    files = list(tmp_path.rglob("*.kv"))
    assert written[0].timings["head_snapshot"] == "written" and len(files) == 1
    first_bytes = files[0].read_bytes()
    restored = run("secret one")
    assert restored[0].timings["head_snapshot"] == "restored"
    for vs in (written, restored):
        assert [v.decision for v in vs] == [v.decision for v in plain]
        assert max(abs(a.margin - b.margin) for a, b in zip(vs, plain)) < 1e-4
    files[0].unlink()
    run("another secret, longer than the first one")
    assert files[0].read_bytes() == first_bytes  # the message never reaches the file
    damaged = bytearray(first_bytes)
    damaged[-1] ^= 0xFF
    files[0].write_bytes(bytes(damaged))
    again = run("secret one")
    assert again[0].timings["head_snapshot"] == "written" and abs(again[0].margin - plain[0].margin) < 1e-4
    assert files[0].read_bytes() == first_bytes


def test_tokenizer_prefetch_imports_on_the_callers_thread(tmp_path):
    """prefetch_tokenizer imports tokenizers (and typing) before its thread starts: an import on the thread raced the
    caller's imports ("partially initialized module 'typing'" from dataclasses, about one load in eight)."""
    script = r"""
import sys, threading
threading.Thread.start = lambda self: None  # the parse thread never runs: only the caller's imports count
from guard.runtime.pte import prefetch_tokenizer
assert "tokenizers" not in sys.modules
prefetch_tokenizer(sys.argv[1])
print("tokenizers" in sys.modules and "typing" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_etlite_plan_is_what_build_compiles():
    """etlite.plan() (the path and flags a cross compiler uses: arm64_userland.sh python) is what build() makes."""
    import sysconfig

    from guard.runtime import etlite

    if not _etlite_available():
        pytest.skip("etlite cannot be built here (no g++?)")
    out, flags, sources = etlite.plan()  # the wheel's link (what a cross compiler builds)
    assert etlite.build() == out and out.is_file() and sources == [etlite.SOURCE]
    assert etlite.library() is not None and etlite.BUILT[0] in {out.name, etlite.plan(notorch=True)[0].name}
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert "-shared" in flags and any(f.endswith(f"_portable_lib{suffix}") for f in flags), flags
