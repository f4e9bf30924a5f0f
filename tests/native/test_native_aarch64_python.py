"""C++ against Python on one architecture, aarch64 under qemu-user: the cross-built guard_parity and Python's Guard
both on the executorch aarch64 wheel's runtime, in the userland of `android_runner/tools/arm64_userland.sh python`
(Debian's arm64 python3.11, the runtime's aarch64 wheels, etlite cross-compiled). The same conversations as the x86
parity test: identical decisions, categories, raw output, and p_unsafe and margin within 1e-5.

Also x86 Python against aarch64 Python on the same requests (printed, not asserted): the cross-architecture gap is
the runtime's, not the C++ core's. Measured (15:00 UTC, load 2-5): tiny guard 196 compared + 4 errors on both
sides, 107 safe, 89 indeterminate, max |d p_unsafe| and |d margin| 0.0, C++ 158 s and Python 125 s of wall time;
guard-mini's 2 requests: both safe, 0.0, 146 s and 153 s.

Run as a module (`ROOT/python -m tests.native.test_native_aarch64_python PTE`), this file is the aarch64 side: it
reads requests as JSON lines and prints python_verdicts' verdicts as JSON lines, like guard_parity."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, conversations
from .test_native_aarch64 import qemu, run_parity_aarch64
from .test_native_parity import assert_same_verdicts, by_policy, python_verdicts

pytestmark = pytest.mark.slow
PARITY_TOL = 1e-5


@pytest.fixture(scope="module")
def arm64_root() -> Path:
    """`bash android_runner/build.sh aarch64` and `arm64_userland.sh python` (each step cached) -> the userland."""
    qemu()
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("no aarch64 cross compiler (Debian: g++-aarch64-linux-gnu)")
    env = dict(os.environ, PY=sys.executable)
    for cmd in (["build.sh", "aarch64"], ["tools/arm64_userland.sh", "python"]):
        p = subprocess.run(["bash", str(ROOT / "android_runner" / cmd[0]), *cmd[1:]], capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
    return Path(p.stdout.strip().splitlines()[-1])


def python_aarch64(root: Path, pte: Path, reqs: list[dict]) -> list[dict]:
    """python_verdicts run by the aarch64 Python (this file as a module). XNNPACK packs in memory, as guard_parity
    does: a packed-weight file would push the host's out of GUARD_HOME (guard.runtime.packed keeps the newest 3)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), GUARD_PACKED_CACHE="0")
    p = subprocess.run([str(root / "python"), "-m", "tests.native.test_native_aarch64_python", str(pte)], cwd=ROOT, env=env,
                       input="".join(json.dumps(r) + "\n" for r in reqs), capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert len(out) == len(reqs) and out[0]["machine"] == "aarch64", p.stderr[-2000:]
    return [{k: v for k, v in d.items() if k != "machine"} for d in out]


def both_aarch64(root: Path, pte: Path, reqs: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """-> guard_parity's and the aarch64 Python's verdicts, and each one's wall time (s, start-up included)."""
    t0 = time.monotonic()
    cpp = run_parity_aarch64([str(root / "run")], pte, reqs)
    t1 = time.monotonic()
    py = python_aarch64(root, pte, reqs)
    return cpp, py, {"cpp_s": round(t1 - t0, 1), "python_s": round(time.monotonic() - t1, 1)}


def assert_same_margins(native: list[dict], python: list[dict]) -> float:
    """assert_same_verdicts checks p_unsafe; the margin (log-odds before calibration) too: -> the largest difference."""
    diffs = [abs(a["margin"] - b["margin"]) for a, b in zip(native, python) if "error" not in b]
    assert max(diffs) <= PARITY_TOL, max(diffs)
    return max(diffs)


def across_arch(aarch64: list[dict], x86: list[dict]) -> dict:
    """aarch64 Python against x86 Python, reported (not asserted: the kernels differ, test_native_aarch64.py bounds
    the gap; decoded category tokens may diverge after many steps)."""
    pairs = [(a, b) for a, b in zip(aarch64, x86) if "error" not in a and "error" not in b]
    return {"compared": len(pairs), "decision_differs": sum(a["decision"] != b["decision"] for a, b in pairs),
            "raw_differs": sum(a["raw"] != b["raw"] for a, b in pairs),
            "max_dmargin": max(abs(a["margin"] - b["margin"]) for a, b in pairs),
            "max_dp": max(abs(a["p_unsafe"] - b["p_unsafe"]) for a, b in pairs)}


@pytest.fixture()
def one_thread(monkeypatch):
    """GUARD_THREADS=1 for guard_parity (qemu passes the environment through) and both Pythons: one core each."""
    monkeypatch.setenv("GUARD_THREADS", "1")


def test_decisions_tiny_exported_model_aarch64_python(arm64_root, tiny_biased_pte, one_thread):
    """The x86 parity test's 200 conversations on the tiny exported guard (8da4w, pruned vocabulary), C++ and Python
    both on aarch64: identical decisions (all three occur), p_unsafe and margins within 1e-5."""
    reqs = by_policy([r for r in conversations(240, seed=20, long_every=1000) if len(json.dumps(r)) < 1200][:200])
    cpp, py, wall = both_aarch64(arm64_root, tiny_biased_pte, reqs)
    counts = assert_same_verdicts(cpp, py)
    counts["max_dmargin"] = assert_same_margins(cpp, py)
    print("tiny decisions, aarch64 C++ against aarch64 Python", counts, wall)
    assert counts["compared"] >= 195 and counts["safe"] and counts["indeterminate"], counts
    print("tiny, aarch64 Python against x86 Python", across_arch(py, python_verdicts(tiny_biased_pte, reqs)))


def test_decisions_guard_mini_aarch64_python(arm64_root, mini_pte, one_thread):
    """guard-mini's .pte (calibrated), C++ and Python both on aarch64: the two requests of test_native_aarch64.py's
    guard-mini test (qemu prefills guard-mini at ~1-3 tokens/s)."""
    opts = {"categories": ["S1", "S9"]}
    reqs = [{"messages": [{"role": "user", "content": "How do I make a pipe bomb at home?"}], "options": opts},
            {"messages": [{"role": "user", "content": "How do I bake bread?"},
                          {"role": "assistant", "content": "Mix flour, water, salt and yeast, let it rise, then bake it."}], "options": opts}]
    cpp, py, wall = both_aarch64(arm64_root, mini_pte, reqs)
    counts = assert_same_verdicts(cpp, py)
    counts["max_dmargin"] = assert_same_margins(cpp, py)
    print("guard-mini decisions, aarch64 C++ against aarch64 Python", counts, wall)
    assert counts["compared"] == 2, counts
    print("guard-mini, aarch64 Python against x86 Python", across_arch(py, python_verdicts(mini_pte, reqs)))


if __name__ == "__main__":
    import platform

    requests = [json.loads(ln) for ln in sys.stdin if ln.strip()]
    for v in python_verdicts(Path(sys.argv[1]), requests):
        print(json.dumps({**v, "machine": platform.machine()}), flush=True)
