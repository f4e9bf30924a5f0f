"""The adb driver: real adb binary for the no-device paths, a local transport for the full sequence."""

import shutil
import sys

import pytest

from guard.bench import android
from guard.errors import GuardError

needs_adb = pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed (.ci/run installs it)")


def test_adb_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("ADB", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GuardError, match="adb not found: install Android platform-tools"):
        android.AdbTransport()


@needs_adb
def test_real_adb_without_a_device():
    with pytest.raises(GuardError, match="no Android device"):
        android.AdbTransport()
    with pytest.raises(GuardError, match="device nope not found"):
        android.AdbTransport("nope")


HEADER = "List of devices attached\n"


@pytest.mark.parametrize("listing,serial,msg", [
    ("R58M123 unauthorized usb:1-1 transport_id:3\n", None, "unauthorized: unlock it and accept"),
    ("R58M123 device usb:1-1 product:x model:Pixel_8 transport_id:3\nemulator-5554 device product:sdk transport_id:4\n", None,
     "several devices (R58M123, emulator-5554): choose one with --device android:SERIAL"),
    ("R58M123 offline transport_id:3\n", None, "is offline: reconnect it"),
    ("", None, "no Android device"),
])
def test_device_selection_errors(listing, serial, msg):
    with pytest.raises(GuardError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        android.pick_device(HEADER + listing, serial)


def test_device_selection():
    listing = HEADER + "R58M123 device usb:1-1 model:Pixel_8 transport_id:3\nemulator-5554 device transport_id:4\n"
    assert android.pick_device(listing, "emulator-5554") == "emulator-5554"
    assert android.pick_device(HEADER + "R58M123 device transport_id:3\n", None) == "R58M123"


@pytest.fixture(scope="module")
def tiny_pte(tiny_model_dir, tmp_path_factory):
    from guard.export import ExportConfig, export_model

    return export_model(tiny_model_dir, tmp_path_factory.mktemp("pte"), ExportConfig(max_seq_len=512, chunk=32))


def host_runner(tmp_path, body=None):
    r = tmp_path / "guard_runner"
    r.write_text(body or f'#!/bin/sh\nexec {sys.executable} -m guard.bench.runner_main "$@"\n')
    r.chmod(0o755)
    return r


@pytest.mark.slow
def test_local_transport_end_to_end(tiny_pte, tmp_path):
    t = android.LocalTransport(tmp_path / "device")
    abi = t.shell("getprop ro.product.cpu.abi").out.split("__rc=")[0].strip()
    doc = android.run_on_device(t, tiny_pte, host_runner(tmp_path), runs=1, warmup=0, prompt_tokens="8,16", expected_abi=abi)
    assert doc["schema"] == "guard-bench-1" and doc["backend"].startswith("pte:")
    assert [r["message_tokens"] for r in doc["runs"]] == [8, 16] and all(r["decode_tok_s"] > 0 for r in doc["runs"])
    assert doc["device"]["transport"] == "local" and doc["device"]["pinned_cores"]
    pushed = tmp_path / "device" / android.DEVICE_DIR.lstrip("/")
    assert sorted(p.name for p in pushed.iterdir()) == ["guard_prompts.txt", "guard_runner", "model.pte", "stats.json", "tokenizer.json"]


@pytest.mark.slow
@pytest.mark.parametrize("body,kw,msg", [
    ("#!/bin/sh\necho loading >&2\nkill -SEGV $$\n", {}, r"runner crashed \(exit 139 \(SIGSEGV\)\)"),
    ("#!/bin/sh\nsleep 30\n", {"timeout": 1}, "timed out after 1 s"),
    (None, {"expected_abi": "arm64-v8a"}, "the runner is built for arm64-v8a"),
])
def test_failures_name_the_fix(tiny_pte, tmp_path, body, kw, msg):
    t = android.LocalTransport(tmp_path / "device")
    kw = {"expected_abi": t.shell("getprop ro.product.cpu.abi").out.split("__rc=")[0].strip(), **kw}
    with pytest.raises(GuardError, match=msg):
        android.run_on_device(t, tiny_pte, host_runner(tmp_path, body), runs=1, warmup=0, prompt_tokens="8", **kw)


@pytest.mark.slow
def test_full_storage(tiny_pte, tmp_path):
    t = android.LocalTransport(tmp_path / "device")
    abi = t.shell("getprop ro.product.cpu.abi").out.split("__rc=")[0].strip()
    huge = tmp_path / "guard_runner"
    with open(huge, "wb") as f:
        f.truncate(1 << 43)  # a sparse 8 TiB "runner": more than any disk here has free
    with pytest.raises(GuardError, match="not enough storage"):
        android.run_on_device(t, tiny_pte, huge, runs=1, warmup=0, prompt_tokens="8", expected_abi=abi)


@pytest.mark.slow
def test_cli_device_local(tiny_pte, tmp_path, capsys, monkeypatch):
    import json
    import tempfile

    from guard.cli import main

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the copies the local "device" holds must not outlive the run
    out = tmp_path / "dev"
    assert main(["bench", str(tiny_pte), "--device", "local", "--runs", "1", "--warmup", "0", "--prompt-tokens", "8",
                 "--out", str(out), "--label", "host-as-device"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["device"]["transport"] == "local" and doc["label"] == "host-as-device" and doc["command"].startswith("guard")
    assert "## host-as-device" in out.with_suffix(".md").read_text()
    assert list(scratch.iterdir()) == []
    assert main(["bench", str(tiny_pte), "--device", "ios"]) == 2
    assert "--device must be android" in capsys.readouterr().err
