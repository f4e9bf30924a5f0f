"""The native guard cross-built for aarch64 (`android_runner/build.sh aarch64`) and run under qemu-user.

Token ids: guard_tokens (the tokenizer and prompt core over pytorch/tokenizers, linked statically) runs under plain
qemu-aarch64 with no aarch64 userland; a subset of the generated conversations (qemu is slow), both tokenizers.
Decisions on aarch64 are not checked here: guard_parity linked to the executorch aarch64 wheel's runtime needs the
arm64 userland that benchmarks/qemu_arm/run.sh builds (root, debootstrap, ~2.5 GB), too heavy for every CI run;
benchmarks/qemu_arm/ compares the same .pte's verdicts on x86 and aarch64 (docs/android.md)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, conversations
from .test_native_parity import assert_same_ids

pytestmark = pytest.mark.slow
B = ROOT / "android_runner" / "build-aarch64"


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

