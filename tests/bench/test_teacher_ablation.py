"""benchmarks/teacher_ablation.py: a training file's make-up is counted right; a missing report or a malformed train file
is a clear one-line exit."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "teacher_ablation.py"


def _row(label, source="s1", adjacent=False, turns=1, **extra):
    msgs = [{"role": "user", "content": f"text {source} {label}"}] + [{"role": "assistant", "content": "ok"}] * (turns - 1)
    cats = ["S2"] if label == "unsafe" else []
    return {"messages": msgs, "label": label, "categories": cats, "source": source, "adjacent": adjacent, **extra}


def test_make_up_counts_shares(tmp_path):
    rows = [_row("unsafe"), _row("unsafe", source="aug_fake_turns"), _row("safe", adjacent=True, repeat_of=3),
            _row("safe", source="s2", turns=2)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = load_script(SCRIPT).make_up(tmp_path)
    assert (m["records"], m["unsafe"], m["look_alike"], m["response"], m["augmented"], m["repeated"], m["sources"]) == \
        (4, 0.5, 0.25, 0.25, 0.25, 0.25, 2)
    assert len(m["sha256"]) == 64


def test_unread_teacher_is_a_one_line_error(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(_row("safe")) + "\n")
    r = subprocess.run([sys.executable, str(SCRIPT), "--run", f"no-such-teacher={tmp_path}", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "read no-such-teacher's teacher first" in r.stderr
    assert not (tmp_path / "out.json").exists()


def test_malformed_train_file_is_a_one_line_error(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(_row("safe")) + "\n" + '{"label": "maybe"}\n')
    r = subprocess.run([sys.executable, str(SCRIPT), "--run", f"next12={tmp_path}", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "train.jsonl:2: label must be" in r.stderr
    assert not (tmp_path / "out.json").exists()
