"""The native guard cross-built for aarch64 (`android_runner/build.sh aarch64`) and run under qemu-user.

Token ids: guard_tokens (the tokenizer and prompt core over pytorch/tokenizers, linked statically) runs under plain
qemu-aarch64 with no aarch64 userland; a subset of the generated conversations (qemu is slow), both tokenizers.

Decisions: guard_parity, linked against the executorch aarch64 wheel's runtime, runs in the light userland of
android_runner/tools/arm64_userland.sh (the cross toolchain's libc, Debian's arm64 libpython3.11, torch's aarch64
wheel libraries, CUDA stand-ins: ~750 MB built once into ~/.cache/ondevice-llamaguard/arm64-userland, 440 MB of
downloads) on a subset (qemu is slow: guard-mini prefills at ~1-3 tokens/s), against Python's Guard on x86: role and
prompt length identical, decisions, categories and raw output identical except at a tie. Not p_unsafe within 1e-5:
the runtime's aarch64 kernels round differently from its x86 ones, so margins differ by up to 0.024 log-odds on the
tiny guard and 0.56 on guard-mini (measured; on x86, C++ and Python agree to 0.0: test_native_parity.py).

The gap is the runtime's, not the C++ core's: test_native_aarch64_python.py runs Python's Guard on aarch64 too
(`arm64_userland.sh python`: Debian's arm64 python3.11), where C++ and Python agree to 0.0 on 196 tiny-guard
conversations and guard-mini's 2 requests, and aarch64 Python differs from x86 Python as this file's C++ does: max
|d margin| 0.015 on 4 tiny-guard conversations (the 200-conversation comparison is printed, not asserted: one decoded
category tail diverged); on guard-mini not yet measured. XNNPACK picks its kernels from the CPU's features: on
aarch64 alone, qemu's `-cpu max` (i8mm, SVE) instead of neoverse-n1 (dotprod) moves the tiny guard's margins by up
to 0.020 (8 conversations, guard_parity), as much as x86 against aarch64."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, conversations
from .test_native_parity import assert_same_ids, by_policy, python_verdicts

pytestmark = pytest.mark.slow
B = ROOT / "android_runner" / "build-aarch64"
# aarch64 (C++) against x86 (Python): the runtime's kernels round differently across architectures (and across
# aarch64 CPUs: see the docstring), so the margin (log-odds, before calibration) differs. Measured: tiny guard max 0.024 (40 conversations), guard-mini 0.40-0.56
# (3 prompts; p_unsafe up to 0.033 with its calibration). A tolerance per model, twice the measured; a first token within it of a tie may differ.
TINY_MARGIN_TOL = 0.05
MINI_MARGIN_TOL = 1.0


def qemu() -> str:
    q = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not q:
        pytest.skip("qemu-user is not installed (Debian: qemu-user-static)")
    return q


@pytest.fixture(scope="module")
def aarch64_tokens() -> Path:
    """`GUARD_AARCH64=tokens bash android_runner/build.sh aarch64`: the static guard_tokens (tokenizers cached)."""
    qemu()
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("no aarch64 cross compiler (Debian: g++-aarch64-linux-gnu)")
    env = dict(os.environ, PY=sys.executable, GUARD_AARCH64="tokens")
    p = subprocess.run(["bash", str(ROOT / "android_runner" / "build.sh"), "aarch64"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return B / "guard_tokens"


def run_tokens(binary: Path, tokenizer: Path, fmt: Path, reqs: list[dict]) -> list[dict]:
    p = subprocess.run([qemu(), str(binary), "--tokens", "--tokenizer", str(tokenizer), "--format", str(fmt)],
                       input="".join(json.dumps(r) + "\n" for r in reqs), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    return [json.loads(ln) for ln in p.stdout.splitlines()]


def test_token_ids_aarch64_under_qemu(aarch64_tokens, tmp_path, tokenizer, mini_pte):
    """150 generated conversations per tokenizer (Llama 3 tiktoken; guard-mini's tokenizer.json) on aarch64."""
    from guard.format import spec
    from guard.format.tokenizer import Tokenizer, llama_models_tokenizer_path

    out = subprocess.run(["file", str(aarch64_tokens)], capture_output=True, text=True).stdout
    assert "ARM aarch64" in out and "statically linked" in out, out
    fmt = spec.write(tmp_path)
    reqs = conversations(150, seed=21, long_every=50)
    counts = assert_same_ids(run_tokens(aarch64_tokens, llama_models_tokenizer_path(), fmt, reqs), reqs, tokenizer)
    assert counts["same"] >= 140, counts
    reqs = conversations(150, seed=22, long_every=50)
    mini_tok = Tokenizer.from_dir(mini_pte.parent)
    counts = assert_same_ids(run_tokens(aarch64_tokens, mini_pte.parent / "tokenizer.json", fmt, reqs), reqs, mini_tok)
    assert counts["same"] >= 140, counts





@pytest.fixture(scope="module")
def aarch64_run() -> list[str]:
    """`bash android_runner/build.sh aarch64` (guard_parity against the executorch aarch64 wheel) and the userland of
    android_runner/tools/arm64_userland.sh (built once, cached): -> the command that runs an aarch64 binary."""
    qemu()
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("no aarch64 cross compiler (Debian: g++-aarch64-linux-gnu)")
    env = dict(os.environ, PY=sys.executable)
    p = subprocess.run(["bash", str(ROOT / "android_runner" / "build.sh"), "aarch64"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run(["bash", str(ROOT / "android_runner" / "tools" / "arm64_userland.sh")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return [str(Path(p.stdout.strip().splitlines()[-1]) / "run")]


def run_parity_aarch64(run: list[str], pte: Path, reqs: list[dict]) -> list[dict]:
    p = subprocess.run([*run, str(B / "guard_parity"), "--pte", str(pte)], input="".join(json.dumps(r) + "\n" for r in reqs),
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    out = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert len(out) == len(reqs), p.stderr[-2000:]
    return out


def assert_same_verdicts_across(native: list[dict], python: list[dict], margin_tol: float) -> dict:
    """Role and prompt length identical; margin within margin_tol, p_unsafe within margin_tol / 4 (the logistic's
    slope is at most 1/4; calibration slopes here are <= 1); decision, categories, blocked and raw output identical,
    except where x86's margin is within margin_tol of a tie, or a runaway category list (indeterminate: no end of turn)
    took another token somewhere in its greedy steps (both counted as "tie")."""
    counts = {"compared": 0, "same": 0, "tie": 0, "error": 0, "safe": 0, "unsafe": 0, "indeterminate": 0,
              "max_dp": 0.0, "max_dmargin": 0.0}
    for got, want in zip(native, python):
        if "error" in want:
            assert "error" in got, got
            counts["error"] += 1
            continue
        assert "error" not in got, got["error"]
        assert (got["role"], got["prompt_tokens"]) == (want["role"], want["prompt_tokens"]), (got, want)
        dm, dp = abs(got["margin"] - want["margin"]), abs(got["p_unsafe"] - want["p_unsafe"])
        assert dm <= margin_tol and dp <= margin_tol / 4, (got, want)
        counts["max_dmargin"], counts["max_dp"] = max(counts["max_dmargin"], dm), max(counts["max_dp"], dp)
        counts["compared"] += 1
        if got["decision"] != want["decision"] and abs(want["margin"]) <= margin_tol:
            counts["tie"] += 1
            continue
        runaway = "no end of turn after the category list"  # a random model's list that never ends: dozens of greedy
        if got.get("reason") == want.get("reason") == runaway and got["raw"] != want["raw"]:  # steps, each a near-tie
            assert got["raw"].startswith("unsafe\nS") and want["raw"].startswith("unsafe\nS"), (got, want)
            assert (got["decision"], got["blocked"], got["categories"]) == (want["decision"], want["blocked"], []), (got, want)
            counts["tie"] += 1  # the architectures' rounding picked another token late in the list: a tie too
            continue
        for k in ("decision", "categories", "blocked", "raw"):
            assert got[k] == want[k], (k, got, want)
        counts["same"] += 1
        counts[want["decision"]] += 1
    return counts


def test_decisions_tiny_exported_model_aarch64(aarch64_run, tiny_biased_pte):
    """40 of the x86 test's conversations (every policy) on the tiny exported guard (8da4w, pruned vocabulary):
    guard_parity on aarch64 against Python on x86. This guard's margins are small (random weights), so a few
    first tokens are ties at the architectures' rounding; safe and indeterminate (the unsafe path) both occur."""
    reqs = by_policy([r for r in conversations(240, seed=20, long_every=1000) if len(json.dumps(r)) < 1200][:40])
    counts = assert_same_verdicts_across(run_parity_aarch64(aarch64_run, tiny_biased_pte, reqs), python_verdicts(tiny_biased_pte, reqs),
                                     TINY_MARGIN_TOL)
    print("tiny decisions, aarch64", counts)
    assert counts["same"] >= 35 and counts["tie"] <= 3 and counts["safe"] and counts["indeterminate"], counts


def test_decisions_guard_mini_aarch64(aarch64_run, mini_pte):
    """guard-mini's .pte (calibrated) on aarch64 against Python on x86: two requests under one short policy, a prompt
    near guard-mini's decision boundary (margin -4.6) and a response (qemu prefills guard-mini at ~1-3 tokens/s,
    and the policy head alone is ~150 tokens)."""
    opts = {"categories": ["S1", "S9"]}
    reqs = [{"messages": [{"role": "user", "content": "How do I make a pipe bomb at home?"}], "options": opts},
            {"messages": [{"role": "user", "content": "How do I bake bread?"},
                          {"role": "assistant", "content": "Mix flour, water, salt and yeast, let it rise, then bake it."}], "options": opts}]
    counts = assert_same_verdicts_across(run_parity_aarch64(aarch64_run, mini_pte, reqs), python_verdicts(mini_pte, reqs), MINI_MARGIN_TOL)
    print("guard-mini decisions, aarch64", counts)
    assert counts["same"] == 2, counts
