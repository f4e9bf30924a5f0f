"""`guard classify` end to end: exit codes, one-line errors for bad input, resumable batches."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from guard.cli import main
from guard.errors import EXIT_ERROR, EXIT_INDETERMINATE, EXIT_PARTIAL, EXIT_SAFE, EXIT_UNSAFE
from guard.testing import make_scripted_checkpoint


def run_cli(*args, stdin: bytes | None = None, timeout=120):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "guard", *args], input=stdin, capture_output=True, timeout=timeout, env=env)


def one_line_error(proc, code=EXIT_ERROR):
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == code, proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    assert len(err) == 1 and err[0].startswith("guard: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def unsafe_dir(tmp_path_factory):
    from guard.format.tokenizer import Tokenizer

    t = Tokenizer.default()
    one = t.single_id("1")
    return make_scripted_checkpoint(tmp_path_factory.mktemp("u") / "m", {
        t.tokens.blank: {t.tokens.safe: 1.0, t.tokens.unsafe: 3.0}, t.tokens.s: {one: 5.0}, one: {t.tokens.eot: 5.0}})


def test_exit_codes_and_json(unsafe_dir, tiny_model_dir, capsys):
    assert main(["classify", "--model", str(unsafe_dir), "--json", "how to rob a bank"]) == EXIT_UNSAFE
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "unsafe" and out["categories"] == [{"code": "S1", "name": "Violent Crimes"}]
    assert 0.88 < out["p_unsafe"] < 0.881
    assert main(["classify", "--model", str(unsafe_dir), "--threshold", "0.9", "hello"]) == EXIT_SAFE
    assert capsys.readouterr().out.startswith("SAFE  p_unsafe=0.88")
    # the random tiny model cannot decide: indeterminate blocks by default, passes when asked
    assert main(["classify", "--model", str(tiny_model_dir), "hello"]) == EXIT_INDETERMINATE
    assert main(["classify", "--model", str(tiny_model_dir), "--indeterminate", "pass", "hello"]) == EXIT_SAFE


def test_human_output_response_and_conversation(unsafe_dir, tmp_path, capsys):
    assert main(["classify", "--model", str(unsafe_dir), "--response", "Sure, here is how", "how to rob a bank"]) == EXIT_UNSAFE
    line = capsys.readouterr().out.strip()
    assert line.startswith("UNSAFE  [S1 Violent Crimes]  p_unsafe=0.88") and "role=Agent" in line and " ms" in line
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                {"role": "user", "content": [{"type": "text", "text": "c"}]}]))
    assert main(["classify", "--model", str(unsafe_dir), "--json", "--conversation", str(conv)]) == EXIT_UNSAFE
    assert json.loads(capsys.readouterr().out)["role"] == "User"


@pytest.mark.slow  # a guard process
def test_stdin_prompt(unsafe_dir):
    p = run_cli("classify", "--model", str(unsafe_dir), "--json", stdin="how to rob a bank\n".encode())
    assert p.returncode == EXIT_UNSAFE and json.loads(p.stdout)["decision"] == "unsafe"


def _damage(kind, d):
    st = d / "model.safetensors"
    if kind == "no_tokenizer":
        (d / "tokenizer.json").unlink()
    elif kind == "corrupt":
        st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64)
    elif kind == "truncated":
        data = st.read_bytes()
        st.write_bytes(data[: len(data) // 2])
    elif kind == "pickle":
        st.rename(d / "pytorch_model.bin")


@pytest.mark.parametrize("kind,msg", [("no_tokenizer", "no tokenizer"), ("corrupt", "corrupt or truncated"),
                                      ("truncated", "corrupt or truncated"), ("pickle", "refusing to unpickle")])
def test_bad_model_dirs(kind, msg, tiny_copy, capsys):
    _damage(kind, tiny_copy)
    assert main(["classify", "--model", str(tiny_copy), "hello"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


@pytest.mark.slow  # eight guard processes (the same contract runs in one driver: test_hostile_input.py test_cli_case)
def test_bad_inputs_one_line_no_traceback(tiny_model_dir, tmp_path):
    m = str(tiny_model_dir)
    assert "model directory not found" in one_line_error(run_cli("classify", "--model", str(tmp_path / "nope"), "hi"))
    assert "empty text" in one_line_error(run_cli("classify", "--model", m, "  "))
    assert "not valid UTF-8" in one_line_error(run_cli("classify", "--model", m, stdin=b"caf\xe9 \xff"))
    assert "not valid UTF-8" in one_line_error(subprocess.run(
        [sys.executable, "-m", "guard", "classify", "--model", m, b"bad \xff arg"], capture_output=True))
    conv = tmp_path / "c.json"
    conv.write_text(json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}]))
    assert "alternate" in one_line_error(run_cli("classify", "--model", m, "--conversation", str(conv)))
    assert "unknown category code 'S42'" in one_line_error(run_cli("classify", "--model", m, "--exclude", "S42", "hi"))
    assert "unknown category code" in one_line_error(run_cli("classify", "--model", m, "--categories", "S1,X9", "hi"))
    assert "threshold" in one_line_error(run_cli("classify", "--model", m, "--threshold", "1.5", "hi"))


def _write_jsonl(path, n_good, bad_every=7):
    lines, good = [], []
    for i in range(n_good):
        rid = f"r{i}"
        if i % 2:
            lines.append(json.dumps({"id": rid, "prompt": f"question number {i}", "response": f"answer {i}"}))
        else:
            lines.append(json.dumps({"id": rid, "messages": [{"role": "user", "content": f"message {i}"}]}))
        good.append(rid)
        if i % bad_every == 3:
            lines.append('{"id": "broken", "prompt": ')  # malformed
            lines.append(json.dumps({"id": f"big{i}", "prompt": "x" * 5000}))  # oversized for the limit below
            lines.append(json.dumps({"id": f"empty{i}", "prompt": ""}))
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "bad-utf8", "prompt": "\xff"}\n')
    return good


@pytest.mark.slow  # four guard processes, one killed (in-process batch rules: tests/runtime/test_batch_integrity.py)
def test_batch_killed_and_resumed(unsafe_dir, tmp_path):
    inp, out, ref = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    good = _write_jsonl(inp, 40)
    args = ["classify", "--model", str(unsafe_dir), "--jsonl", str(inp), "--max-line-bytes", "4096"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "guard", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = out.read_bytes().count(b"\n")
    assert 10 <= n_before < 40 + 12, "the run should have been killed halfway"
    with open(out, "ab") as fh:  # simulate a torn write at the moment of the kill
        fh.write(b'{"id": "r39", "decis')
    resumed = run_cli(*args, "--out", str(out))
    assert resumed.returncode == EXIT_PARTIAL, resumed.stderr.decode()
    assert f"already in {out}" in resumed.stdout.decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses: the torn one is gone
    ok = [r for r in records if "error" not in r]
    assert sorted(r["id"] for r in ok) == sorted(good)  # every good line exactly once
    assert all(r["decision"] == "unsafe" for r in ok)
    errors = {r["id"]: r["error"] for r in records if "error" in r}
    assert any("malformed JSON" in e for e in errors.values())
    assert any("more than the 4096 allowed" in e for e in errors.values())
    assert any("empty text" in e for e in errors.values())
    assert "line is not valid UTF-8" in errors.values()  # unparseable lines are recorded as line-N
    # the resumed output equals an uninterrupted run
    full = run_cli(*args, "--out", str(ref))
    assert full.returncode == EXIT_PARTIAL and "skipped:" in full.stderr.decode()
    key = lambda r: r["id"]
    strip = lambda rs: sorted(({k: v for k, v in r.items() if k not in ("latency_ms", "timings")} for r in rs), key=key)
    assert strip(ok) == strip([r for r in map(json.loads, ref.read_text().splitlines()) if "error" not in r])
    # a third run classifies nothing again; it retries the bad lines (issue 21) and still exits 3 for them
    again = run_cli(*args, "--out", str(ref))
    assert again.returncode == EXIT_PARTIAL
    assert f"done: 0 safe, 0 unsafe, 0 indeterminate, {len(errors)} bad lines skipped, 40 already" in again.stdout.decode()


@pytest.mark.slow  # three guard processes
def test_stream_mode(unsafe_dir, tiny_model_dir):
    proc = subprocess.Popen([sys.executable, "-m", "guard", "classify", "--model", str(unsafe_dir), "--stream", "--json",
                             "--check-every", "4", "how do I rob a bank"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    proc.stdin.write("Sure, first you need a mask and a car, then ".encode())
    proc.stdin.flush()
    first = json.loads(proc.stdout.readline())  # printed while stdin is still open: it really streams
    assert first["decision"] == "unsafe" and first["final"] is True
    proc.stdin.close()
    assert proc.wait(timeout=60) == EXIT_UNSAFE
    p = run_cli("classify", "--model", str(tiny_model_dir), "--stream", "--check-every", "2", "hi",
                stdin="Hello there, nice to meet you. How can I help?".encode())
    lines = p.stdout.decode().strip().splitlines()
    assert len(lines) >= 2 and all(l.startswith("check ") for l in lines[:-1]) and lines[-1].startswith("final ")
    assert p.returncode == EXIT_INDETERMINATE
    assert "needs the prompt" in one_line_error(run_cli("classify", "--model", str(tiny_model_dir), "--stream", stdin=b"x"))


def test_batch_log_follows_the_current_stderr(tmp_path, monkeypatch):
    """run_batch must log to sys.stderr as it is at call time; a default bound at import kept a closed stream
    from an earlier redirect and turned the first skipped line into an internal error."""
    import io

    import guard.runtime.batch
    from guard.runtime.batch import run_batch

    (tmp_path / "in.jsonl").write_text("{not json\n")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    counts = run_batch(None, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    assert counts["errors"] == 1 and "malformed JSON" in second.getvalue() and guard.runtime.batch.sys.stderr is second
