"""Run `guard bench` on an Android phone over adb, or on this host through the same command sequence.

The driver speaks to a Transport (adb, or LocalTransport which maps the device directory to a host folder and runs
the identical shell commands with `sh -c`). Sequence: ABI check, free-storage check, push model + tokenizer +
prompt token ids (guard_prompts.txt) + runner, read the big cores from /sys/devices/system/cpu/*/cpufreq, run pinned
with taskset, pull the stats JSON.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from guard.errors import GuardError

DEVICE_DIR = "/data/local/tmp/guard"
ADB_HINT = "install Android platform-tools (Debian/Ubuntu: apt-get install adb) or set ADB=/path/to/adb"


@dataclass
class Result:
    rc: int
    out: str
    err: str


class AdbTransport:
    def __init__(self, serial: str | None = None, adb: str | None = None):
        self.adb = adb or os.environ.get("ADB") or shutil.which("adb")
        if not self.adb or not Path(self.adb).exists():
            raise GuardError(f"adb not found: {ADB_HINT}")
        self.serial = pick_device(self._run(["devices", "-l"], timeout=30).out, serial)
        self.name = f"android:{self.serial}"

    def _run(self, args: list[str], timeout: float) -> Result:
        try:
            p = subprocess.run([self.adb, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GuardError(f"adb {' '.join(args[:2])} timed out after {timeout:.0f} s: check the USB connection") from None
        return Result(p.returncode, p.stdout, p.stderr)

    def shell(self, cmd: str, timeout: float = 60) -> Result:
        return self._run(["-s", self.serial, "shell", cmd + "; echo __rc=$?"], timeout)

    def push(self, src: Path, dst: str) -> None:
        r = self._run(["-s", self.serial, "push", str(src), dst], timeout=600)
        if r.rc:
            raise GuardError(f"adb push {src.name} failed: {(r.err or r.out).strip().splitlines()[-1:]}")

    def pull(self, src: str, dst: Path) -> None:
        r = self._run(["-s", self.serial, "pull", src, str(dst)], timeout=120)
        if r.rc:
            raise GuardError(f"adb pull {src} failed: {(r.err or r.out).strip()[:200]}")


class LocalTransport:
    """The same commands on this host: DEVICE_DIR is mapped to a host folder, shell runs `sh -c`."""

    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)  # the caller owns it (guard bench uses a TemporaryDirectory)
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        abi = {"x86_64": "x86_64", "aarch64": "arm64-v8a"}.get(platform.machine(), platform.machine())
        (bin_dir / "getprop").write_text(f"#!/bin/sh\n[ \"$1\" = ro.product.cpu.abi ] && echo {abi}\n")
        (bin_dir / "getprop").chmod(0o755)

    def _map(self, text: str) -> str:
        return text.replace(DEVICE_DIR, str(self.root / DEVICE_DIR.lstrip("/")))

    def shell(self, cmd: str, timeout: float = 60) -> Result:
        env = {**os.environ, "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}"}
        try:
            p = subprocess.run(["sh", "-c", self._map(cmd) + "; echo __rc=$?"], capture_output=True, text=True,
                               timeout=timeout, env=env, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise GuardError(f"runner timed out after {timeout:.0f} s on {self.name}: raise --timeout") from None
        return Result(p.returncode, p.stdout, p.stderr)

    def push(self, src: Path, dst: str) -> None:
        target = Path(self._map(dst))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)

    def pull(self, src: str, dst: Path) -> None:
        shutil.copy2(self._map(src), dst)


def pick_device(devices_output: str, serial: str | None) -> str:
    """Parse `adb devices -l` and choose the device, with errors that name the fix."""
    rows = [ln.split() for ln in devices_output.splitlines()[1:] if ln.strip() and not ln.startswith("*")]
    states = {r[0]: r[1] for r in rows if len(r) >= 2}
    if serial:
        if serial not in states:
            raise GuardError(f"device {serial} not found (adb devices lists: {', '.join(states) or 'none'})")
        candidates = [serial]
    else:
        candidates = list(states)
    if not candidates:
        raise GuardError("no Android device: connect one with USB debugging enabled and check `adb devices`")
    if len(candidates) > 1:
        raise GuardError(f"several devices ({', '.join(candidates)}): choose one with --device android:SERIAL")
    state = states[candidates[0]]
    if state == "unauthorized":
        raise GuardError(f"device {candidates[0]} is unauthorized: unlock it and accept the USB debugging prompt, then retry")
    if state != "device":
        raise GuardError(f"device {candidates[0]} is {state}: reconnect it (adb reconnect) and retry")
    return candidates[0]


def _checked(r: Result, what: str) -> str:
    out, _, code = r.out.rpartition("__rc=")
    rc = int(code.strip() or 1) if code.strip().isdigit() else r.rc
    if rc:
        raise GuardError(f"{what} failed on the device (exit {rc}): {(r.err or out).strip()[-200:]}")
    return out


def big_cores(transport) -> list[int]:
    """Cores with the highest cpuinfo_max_freq; all cores when cpufreq is not exposed."""
    out = _checked(transport.shell(
        "for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do [ -r $f ] && echo $f $(cat $f); done; "
        "ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l"), "reading cpufreq")
    lines = out.strip().splitlines()
    freqs = {int(p.split("/cpu")[-1].split("/")[0]): int(f) for p, f in (ln.split() for ln in lines[:-1] if len(ln.split()) == 2)}
    if not freqs:
        return list(range(int(lines[-1]))) if lines and lines[-1].strip().isdigit() else [0]
    top = max(freqs.values())
    return sorted(c for c, f in freqs.items() if f == top)


def _prompts_file(tokenizer_dir: Path, prompt_tokens: str, folder: Path) -> Path:
    """guard_prompts.txt (guard.bench.prompts) for these message lengths, written in folder."""
    from guard.bench import prompts
    from guard.format.tokenizer import Tokenizer

    try:
        lengths = [int(x) for x in prompt_tokens.split(",")]
    except ValueError:
        raise GuardError(f"--prompt-tokens must be comma-separated integers, not {prompt_tokens!r}") from None
    return prompts.write(Tokenizer.from_dir(tokenizer_dir), lengths, Path(folder) / prompts.NAME)


def run_on_device(transport, model: Path, runner: Path, runs: int = 5, warmup: int = 1, prompt_tokens: str = "16,40,128,256",
                  expected_abi: str = "arm64-v8a", timeout: float = 900) -> dict:
    """Push, pin, run and pull; returns the stats document the runner wrote (guard bench schema)."""
    model, runner = Path(model), Path(runner)
    tokenizer = model.parent / "tokenizer.json"
    for f in (model, runner, tokenizer):
        if not f.is_file():
            raise GuardError(f"not found: {f}")
    abi = _checked(transport.shell("getprop ro.product.cpu.abi"), "reading the ABI").strip()
    if abi != expected_abi:
        raise GuardError(f"device ABI is {abi}, the runner is built for {expected_abi}: use an {expected_abi} phone or rebuild the runner")
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as scratch:  # the prompts file and the pulled stats
        scratch = Path(scratch)
        prompts = _prompts_file(tokenizer.parent, prompt_tokens, scratch)  # token ids for runners without a tokenizer (C++)
        need_kb = (model.stat().st_size + runner.stat().st_size + tokenizer.stat().st_size + prompts.stat().st_size) // 1024 + 64 * 1024
        df = _checked(transport.shell(f"mkdir -p {DEVICE_DIR} && df -k {DEVICE_DIR} | tail -1"), "checking free storage").split()
        free_kb = int(df[3]) if len(df) >= 4 and df[3].isdigit() else 0
        if free_kb < need_kb:
            raise GuardError(f"not enough storage in {DEVICE_DIR}: {free_kb // 1024} MB free, {need_kb // 1024} MB needed; free some space")
        for f, name in ((model, "model.pte"), (tokenizer, "tokenizer.json"), (prompts, "guard_prompts.txt"), (runner, "guard_runner")):
            transport.push(f, f"{DEVICE_DIR}/{name}")
        cores = big_cores(transport)
        mask = format(sum(1 << c for c in cores), "x")
        cmd = (f"cd {DEVICE_DIR} && chmod 755 guard_runner && rm -f stats.json && taskset {mask} ./guard_runner "
               f"--model model.pte --threads {len(cores)} --runs {runs} --warmup {warmup} --prompt-tokens {prompt_tokens} --out stats.json")
        r = transport.shell(cmd, timeout=timeout)
        out, _, code = r.out.rpartition("__rc=")
        rc = int(code.strip()) if code.strip().isdigit() else r.rc
        if rc:
            sig = f" ({signal.Signals(rc - 128).name})" if rc > 128 and rc - 128 in signal.Signals._value2member_map_ else ""
            last = (r.err.strip().splitlines() or out.strip().splitlines() or ["no output"])[-1][-200:]
            raise GuardError(f"runner crashed (exit {rc}{sig}): {last}; run it by hand with adb shell to see the full log")
        local = scratch / "stats.json"
        transport.pull(f"{DEVICE_DIR}/stats.json", local)
        doc = json.loads(local.read_text())
        doc["device"] = {"transport": transport.name, "abi": abi, "pinned_cores": cores, "free_mb": free_kb // 1024}
        return doc


def run_device(model: str | Path, device: str, runner: str | Path | None = None, **kw) -> dict:
    """``guard bench --device``: ``device`` is ``android``, ``android:SERIAL`` or ``local`` (the same command
    sequence on this host, in a scratch folder removed afterwards, with the Python runner behind guard_runner's
    command-line contract unless ``runner`` is given). ``kw``: run_on_device's options."""
    import sys

    if not Path(model).is_file():
        raise GuardError("--device runs an exported .pte; export it first with `guard export`")
    kind, _, serial = device.partition(":")
    if kind not in ("local", "android"):
        raise GuardError(f"--device must be android, android:SERIAL or local, not {device!r}")
    if kind == "android" and not runner:
        raise GuardError("--device android needs --runner PATH: an arm64 guard_runner built from android_runner/ (docs/android.md)")
    with tempfile.TemporaryDirectory(prefix="guard-device-") as scratch:
        if kind == "android":
            transport, abi = AdbTransport(serial or None), "arm64-v8a"
        else:
            transport = LocalTransport(Path(scratch) / "device")
            abi = transport.shell("getprop ro.product.cpu.abi").out.rpartition("__rc=")[0].strip()
            if runner is None:  # the Python host runner behind the same command-line contract
                runner = Path(scratch) / "guard_runner"
                runner.write_text(f"#!/bin/sh\nexec {sys.executable} -m guard.bench.runner_main \"$@\"\n")
                runner.chmod(0o755)
        doc = run_on_device(transport, Path(model), Path(runner), expected_abi=abi, **kw)
    doc["command"] = " ".join(["guard"] + sys.argv[1:])
    return doc
