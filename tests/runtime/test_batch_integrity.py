"""Batch integrity (issue 21): bad lines, kill -9 and resume, two runs on one OUT, a full disk, ids and paths."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from guard.errors import EXIT_ERROR, EXIT_PARTIAL, GuardError

pytestmark = pytest.mark.timeout(900)
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
BAD = [b"{", b"[" * 50_000 + b"]" * 50_000, b'{"id": 1' + b"0" * 5000 + b', "prompt": "x"}', b'{"prompt": "\xff"}',
       b'{"id": true, "prompt": "x"}', b'{"prompt": ""}', b'{"prompt": "' + b"x" * 3000 + b'"}', b"[]",
       b'{"id": "u", "messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]}']


def write_input(path, n_good: int, seed: int = 0) -> list:
    """n_good good lines (ids: ints and strings, 7 and "7" both), each kind of bad line, and one duplicate id."""
    rng = random.Random(seed)
    good, lines = [], []
    for k in range(n_good):
        rid = k if k % 2 else str(k // 2 * 2 + 1)  # 1, "1", 3, "3", ...: equal text, different JSON types
        good.append(rid)
        lines.append(json.dumps({"id": rid, "prompt": f"message {k}: " + " ".join(rng.choice("abcdefgh") for _ in range(8))}).encode())
        if k % 7 == 3:
            lines.append(BAD[(k // 7) % len(BAD)])
    lines += BAD  # every kind at least once
    lines.append(json.dumps({"id": good[0], "prompt": "a duplicate id"}).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return good


def records(out) -> list[dict]:
    return [json.loads(x) for x in out.read_bytes().splitlines()]


def check_output(out, good) -> list[dict]:
    recs = records(out)
    results = [r["id"] for r in recs if "decision" in r]
    assert sorted(results, key=repr) == sorted(good, key=repr), "every good line exactly once, ids with their JSON type"
    errors = [r for r in recs if "error" in r]
    assert any("duplicate id" in r["error"] for r in errors)
    return errors


def cli(model, inp, out, *extra) -> list[str]:
    return [sys.executable, "-m", "guard", "classify", "--model", str(model), "--jsonl", str(inp), "--out", str(out),
            "--max-line-bytes", "2048", *extra]


@pytest.mark.slow  # spawns and kills a guard process 5+ times
def test_kill_9_at_random_points_then_resume(tiny_model_dir, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = write_input(inp, 120)
    rng, kills = random.Random(21), 0
    while kills < 5:
        have = out.read_bytes().count(b'"decision"') if out.exists() else 0
        target = have + rng.randint(1, 12)
        proc = subprocess.Popen(cli(tiny_model_dir, inp, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.random() * 0.05)  # anywhere: between records, inside a write, during fsync
        if proc.poll() is not None:
            break  # finished before the kill point: fine, the check below still holds
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if rng.random() < 0.5:  # the moment of the kill, made worse: a torn record at the end
            with open(out, "ab") as fh:
                fh.write(b'{"id": "torn-marker", "decis')
    assert kills >= 5, "the batch finished before 5 kills; make it longer"
    final = subprocess.run(cli(tiny_model_dir, inp, out), env=ENV, capture_output=True, timeout=600)
    assert final.returncode == EXIT_PARTIAL, final.stderr.decode()[-500:]
    errors = check_output(out, good)
    assert len(errors) == len(BAD) + 120 // 7 + 1  # error records of this run only: older ones were retried
    assert b"torn-marker" not in out.read_bytes()


@pytest.mark.slow  # two guard processes
def test_two_concurrent_runs_on_one_out(tiny_model_dir, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = write_input(inp, 40)
    first = subprocess.Popen(cli(tiny_model_dir, inp, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    lock = out.with_name(out.name + ".lock")  # taken before the model loads: the second run starts while it is held
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert first.poll() is None
    second = subprocess.run(cli(tiny_model_dir, inp, out), env=ENV, capture_output=True, timeout=300)
    first.communicate(timeout=600)
    assert first.returncode == EXIT_PARTIAL
    assert second.returncode == EXIT_ERROR and b"another run is writing" in second.stderr  # was: every record twice
    check_output(out, good)


def test_complete_last_record_without_newline_is_kept_and_errors_retried(tiny_model_dir, tmp_path, capsys):
    from guard.cli import main

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = write_input(inp, 6)
    args = ["classify", "--model", str(tiny_model_dir), "--jsonl", str(inp), "--out", str(out), "--max-line-bytes", "2048"]
    assert main(args) == EXIT_PARTIAL
    data = out.read_bytes()
    last_result = max(i for i, r in enumerate(records(out)) if "decision" in r)
    lines = data.splitlines()
    kept = lines[:last_result + 1]
    out.write_bytes(b"\n".join(kept))  # a complete record, its newline lost: it must survive, not be re-done
    capsys.readouterr()
    assert main(args) == EXIT_PARTIAL  # the error lines are retried and still bad
    assert "already in" in capsys.readouterr().out
    recs = records(out)
    assert json.loads(kept[-1]) in recs
    check_output(out, good)


def test_ids_keep_their_type_and_duplicates_are_reported(tiny_model_dir, tmp_path):
    from guard.runtime.batch import run_batch
    from guard.runtime.classifier import Guard
    from guard.runtime.eager import EagerRunner

    r = EagerRunner(tiny_model_dir)
    g = Guard(r, r.tokenizer)
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"id": 7, "prompt": "a"}, {"id": "7", "prompt": "b"}, {"id": 7, "prompt": "c"}, {"prompt": "d"}]) + "\n")
    counts = run_batch(g, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False, log=open(os.devnull, "w"))
    recs = records(tmp_path / "out.jsonl")
    assert [r["id"] for r in recs if "decision" in r] == [7, "7", "line-4"]  # was: "7" dropped as done, 7 -> "7"
    assert [r["line"] for r in recs if "error" in r] == [3] and counts["errors"] == 1


def test_image_paths_stay_in_the_jsonl_folder(tmp_path):
    from guard.runtime.batch import image_path

    (tmp_path / "data").mkdir()
    inp = tmp_path / "data" / "in.jsonl"
    (tmp_path / "data" / "ok.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", tmp_path / "data" / "link.png")
    assert image_path(inp, "ok.png") == (tmp_path / "data" / "ok.png").resolve()
    messages = set()
    for bad in ("../secret.png", "../missing.png", str(tmp_path / "secret.png"), "/etc/passwd", "/nonexistent", "link.png"):
        with pytest.raises(GuardError) as e:
            image_path(inp, bad)
        messages.add(str(e.value))
    assert len(messages) == 1  # the same words whether the file exists or not: nothing leaks
    assert image_path(inp, "../secret.png", allow_any_path=True) == (tmp_path / "secret.png").resolve()


def test_full_disk(tiny_model_dir, tmp_path, capsys):
    """A 48 KiB tmpfs fills up mid-batch: exit 2 with one line, no half record; after space frees up, a rerun
    finishes with every good line exactly once."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (run as root to test a full disk)")
    from guard.cli import main

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs failed (no CAP_SYS_ADMIN in this container)")
    try:
        inp, out = tmp_path / "in.jsonl", disk / "out.jsonl"
        good = write_input(inp, 200)
        args = ["classify", "--model", str(tiny_model_dir), "--jsonl", str(inp), "--out", str(out), "--max-line-bytes", "2048"]
        capsys.readouterr()
        assert main(args) == EXIT_ERROR  # was 1, an internal error
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("guard: error: cannot write to") and "disk is full" in err[-1]
        done = records(out)  # every line parses: the partial record was cut
        assert 0 < len([r for r in done if "decision" in r]) < len(good)
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        assert main(args) == EXIT_PARTIAL
        check_output(out, good)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
