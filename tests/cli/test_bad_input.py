"""Bad input found by the issue audit: each gets one line, exit 2, and nothing half-written."""

import json
import os
import subprocess
import sys

import pytest

from guard.cli import main
from guard.errors import EXIT_ERROR, GuardError


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("guard: error: "), err
    return err[0]


@pytest.fixture()
def jsonl(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text(json.dumps({"id": "a", "prompt": "hello"}) + "\n")
    return p


@pytest.mark.parametrize("out,msg", [("missing/out.jsonl", "does not exist"), (".", "is a directory")])
def test_batch_unusable_out_is_bad_input(tiny_model_dir, jsonl, tmp_path, capsys, out, msg):
    code = main(["classify", "--model", str(tiny_model_dir), "--jsonl", str(jsonl), "--out", str(tmp_path / out)])
    assert code == EXIT_ERROR  # was 1, "internal error: FileNotFoundError / IsADirectoryError"
    assert msg in one_error_line(capsys)
    assert not (tmp_path / "missing").exists()


def test_batch_input_dir_and_line_limit(tiny_model_dir, jsonl, tmp_path, capsys):
    m = str(tiny_model_dir)
    assert main(["classify", "--model", m, "--jsonl", str(tmp_path), "--out", str(tmp_path / "o.jsonl")]) == EXIT_ERROR
    assert "is a directory, not a JSONL file" in one_error_line(capsys)
    assert main(["classify", "--model", m, "--jsonl", str(jsonl), "--out", str(tmp_path / "o.jsonl"),
                 "--max-line-bytes", "0"]) == EXIT_ERROR
    assert "--max-line-bytes must be at least 1" in one_error_line(capsys)
    assert not (tmp_path / "o.jsonl").exists()


def test_batch_paths_are_checked_before_the_model_loads(jsonl, tmp_path):
    """A bad --out is reported even when the model is also bad: no model load, no traceback, from the real CLI."""
    p = subprocess.run([sys.executable, "-m", "guard", "classify", "--model", str(tmp_path / "no-model"), "--jsonl",
                        str(jsonl), "--out", str(tmp_path / "nodir" / "o.jsonl")], capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    err = p.stderr.decode()
    assert p.returncode == EXIT_ERROR and "Traceback" not in err
    assert err.strip().splitlines() == [f"guard: error: --out directory {tmp_path / 'nodir'} does not exist"]


def test_empty_category_list_is_refused(tiny_model_dir, capsys):
    assert main(["classify", "--model", str(tiny_model_dir), "--categories", "", "hi"]) == EXIT_ERROR  # was: default S1-S13
    assert "no category codes" in one_error_line(capsys)
    assert main(["classify", "--model", str(tiny_model_dir), "--exclude", "", "hi"]) == EXIT_ERROR
    assert "no category codes" in one_error_line(capsys)


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan")])
def test_stream_check_interval_in_seconds_must_be_positive(tiny_model_dir, seconds):
    from guard.runtime.classifier import Guard
    from guard.runtime.eager import EagerRunner

    r = EagerRunner(tiny_model_dir)
    with pytest.raises(GuardError, match="check_every_s must be a positive number of seconds"):
        Guard(r, r.tokenizer).moderate_stream("hi", check_every=None, check_every_s=seconds)


def test_stream_cli_negative_seconds(tiny_model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello")))
    assert main(["classify", "--model", str(tiny_model_dir), "--stream", "--check-every-s", "-1", "hi"]) == EXIT_ERROR
    assert "check_every_s" in one_error_line(capsys)


def test_distill_labels_outside_the_category_set_leave_nothing(tiny_model_dir, tmp_path, capsys):
    """Issue #4: labels outside the category set -> one line, exit 2, no OUT and no OUT.work."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}], "label": "unsafe",
                                "categories": ["S99"], "split": "train"}) + "\n")
    out = tmp_path / "student"
    assert main(["distill", str(tiny_model_dir), "--teacher", str(tiny_model_dir), "--data", str(data), "--out",
                 str(out), "--steps", "1", "--no-bf16"]) == EXIT_ERROR
    assert "outside the category set" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


@pytest.mark.parametrize("argv,msg", [
    (["classify", "--threshold", "abc", "hi"], "argument --threshold: invalid float value: 'abc'"),
    (["classify", "--dtype", "fp8", "hi"], "argument --dtype: invalid choice"),
    (["classify", "--bogus", "hi"], "unrecognized arguments: --bogus"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_usage_errors_are_one_line(argv, msg, capsys):
    """README: exit 2 is 'bad input or usage: one line on stderr' (argparse printed a usage block first)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == EXIT_ERROR
    assert msg in one_error_line(capsys)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_distill_missing_or_pickle_model_dirs(tiny_model_dir, tmp_path, capsys, which):
    """Was exit 1, 'internal error: HFValidationError'; a pickle-only dir would have gone to from_pretrained."""
    import shutil

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}], "label": "safe", "categories": [],
                                "split": "train"}) + "\n")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    for bad, msg in [(tmp_path / "missing", "model directory not found"), (pickled, "refusing to unpickle")]:
        student, teacher = (bad, tiny_model_dir) if which == "student" else (tiny_model_dir, bad)
        assert main(["distill", str(student), "--teacher", str(teacher), "--data", str(data), "--out",
                     str(tmp_path / "out"), "--steps", "1", "--no-bf16"]) == EXIT_ERROR
        assert msg in one_error_line(capsys)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


@pytest.mark.parametrize("decay", ["5", "-1"])
def test_distill_decay_from_out_of_range(tiny_model_dir, tmp_path, capsys, decay):
    """--decay-from must fall inside the run (else the schedule is a silent no-op or a negative rate)."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}], "label": "safe", "categories": [],
                                "split": "train"}) + "\n")
    assert main(["distill", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "out"), "--steps", "5",
                 "--decay-from", decay, "--no-bf16"]) == EXIT_ERROR
    assert "--decay-from" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()
