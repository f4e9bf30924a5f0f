"""The native guard cross-built for aarch64 (`android_runner/build.sh aarch64`) under qemu-user: prompt token ids
equal to the Python tokenizer's on a subset of the generated conversations. Needs the arm64 userland of
benchmarks/qemu_arm/run.sh (its Python venv provides the executorch/torch libraries the wheel build links to)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, conversations
from .test_native_parity import assert_same_ids

pytestmark = pytest.mark.slow
ARM_ROOT = Path(os.environ.get("ARM_ROOT", "/work/arm64root"))
BIN = ROOT / "android_runner" / "build-aarch64" / "guard_parity"


def test_token_ids_aarch64_under_qemu(tmp_path, tokenizer):
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu:
        pytest.skip("qemu-user is not installed (Debian: qemu-user-static)")
    if not (ARM_ROOT / "opt/venv/bin/python").exists():
        pytest.skip(f"no arm64 userland at {ARM_ROOT}: run `bash benchmarks/qemu_arm/run.sh` as root first (~15 min)")
    if not BIN.is_file():
        pytest.skip("no aarch64 build: run `bash android_runner/build.sh aarch64` first")
    from guard.format import spec
    from guard.format.tokenizer import llama_models_tokenizer_path

    fmt = spec.write(tmp_path)
    reqs = conversations(100, seed=21)
    site = "/opt/venv/lib/python3.11/site-packages"
    env = dict(os.environ, QEMU_LD_PREFIX=str(ARM_ROOT),
               LD_LIBRARY_PATH=":".join(str(ARM_ROOT) + p for p in (f"{site}/torch/lib", "/opt/cuda-stubs")))
    p = subprocess.run([qemu, "-L", str(ARM_ROOT), str(BIN), "--tokens", "--tokenizer", str(llama_models_tokenizer_path()),
                        "--format", str(fmt)], input="".join(json.dumps(r) + "\n" for r in reqs), capture_output=True,
                       text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    counts = assert_same_ids([json.loads(ln) for ln in p.stdout.splitlines()], reqs, tokenizer)
    assert counts["same"] >= 90
