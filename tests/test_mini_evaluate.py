"""models/guard-mini/evaluate.py: issue 18's measurements of a build, the teacher choice, and resuming a stopped run."""

import importlib.util
import json

import pytest

from guard.mini import ARTEFACTS


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("mini_evaluate", ARTEFACTS / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(pte_f1, teacher_f1, recall, fpr, hazard, flips):
    m = lambda **kw: {"f1": None, "recall": None, "fpr": None, "hazard_exact": None, **kw}  # noqa: E731
    return {"heldout": {"models": {"p": m(recall=recall, fpr=fpr, hazard_exact=hazard), "t": m()}},
            "test1000": {"models": {"p": m(f1=pte_f1), "t": m(f1=teacher_f1)}},
            "adversarial": {"models": {"p": {"adversarial": {"flip_rate": flips[0]}}, "t": {"adversarial": {"flip_rate": flips[1]}}}}}


def test_targets_and_the_replacement_rule():
    ev = _evaluate_module()
    models = {"pte": "p", "teacher": "t"}
    good = ev.check(ev.TARGETS, _results(0.91, 0.92, 0.86, 0.09, 0.71, (0.05, None)), models)
    assert [r["met"] for r in good] == [True, True, True, True, True, False, True]  # no teacher flip rate: not met
    assert abs(good[4]["value"] - (0.91 - 0.92)) < 1e-9
    rule = ev.check(ev.REPLACE_V5, _results(0.84, 0.9, 0.85, 0.198, 0.548, (0, 0)), models)
    assert all(r["met"] for r in rule)  # each bound is inclusive, as written in next/README.md
    rule = ev.check(ev.REPLACE_V5, _results(0.84, 0.9, 0.849, 0.1, 0.6, (0, 0)), models)
    assert [r["met"] for r in rule] == [False, True, True, True]
    card = {"name": "x", "artefacts": "a", "data": "d", "limit": None, "command": "c", "environment": {}, "models": models,
            "parts": list(ev.PARTS), "targets": good, "replace_v5": rule, "replaces_v5": False}
    md = ev.card_markdown(card)
    assert "Replaces v5 (rule written before any result): **no**" in md and "| held-out recall on unsafe | 0.849 |" in md


def test_bad_arguments_are_one_line_before_anything_is_built(tmp_path, capsys):
    ev = _evaluate_module()
    assert ev.main(["build", "--data", str(tmp_path), "--build", str(tmp_path / "none"), "--limit", "0"]) == 1
    assert capsys.readouterr().err.strip() == "evaluate.py: --limit must be at least 1"
    assert ev.main(["build", "--data", str(tmp_path), "--build", str(tmp_path / "none"), "--no-baseline"]) == 1
    assert capsys.readouterr().err.strip() == "evaluate.py: --no-baseline is for `teacher` only"
    for what in ("build", "teacher"):
        assert ev.main([what, "--data", str(tmp_path), "--build", str(tmp_path / "none"), "--work", str(tmp_path / "w")]) == 1
        assert capsys.readouterr().err.strip() == (f"evaluate.py: {tmp_path / 'heldout.jsonl'} not found: DATA must be a "
                                                   "`guard data build` directory")
        assert not (tmp_path / "none").exists() and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_card_and_teacher_choice_end_to_end(tmp_path, capsys):
    """The shipped build (its .pte and its teacher, eager) on two records of each part; a rerun resumes."""
    from guard.defaults import default_model

    ev = _evaluate_module()
    suite = [json.loads(line) for line in ev.SUITE.read_text().splitlines()]
    data = tmp_path / "data"
    data.mkdir()
    for name in ("heldout", "test"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite[:2]))
    kind, pte, _ = default_model(build=True)
    common = ["--data", str(data), "--artefacts", str(ARTEFACTS), "--work", str(tmp_path / "work"),
              "--results", str(tmp_path / "results"), "--limit", "2", "--name", "t"]
    assert ev.main(["build", "--build", str(pte.parent)] + common) == 0
    card = json.loads((tmp_path / "results" / "guard_mini_t_card.json").read_text())
    assert [r["what"] for r in card["targets"]] == [t[0] for t in ev.TARGETS] and card["models"]["pte"] == str(pte)
    assert all(r["value"] is not None for r in card["targets"] if "flip" not in r["what"])  # each part ran on both models
    assert (tmp_path / "results" / "guard_mini_t_card.png").stat().st_size > 1000
    for part in ev.PARTS:
        assert json.loads((tmp_path / "results" / f"guard_mini_t_{part}.json").read_text())["n"] == 2
    capsys.readouterr()
    assert ev.main(["build", "--build", str(pte.parent)] + common) == 0  # a rerun runs nothing again
    assert capsys.readouterr().out.count(": done (") == len(ev.PARTS)

    assert ev.main(["teacher", "--baseline", str(ARTEFACTS / "v4")] + common) == 0
    choice = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert choice["keep"] in ("next", "baseline") and set(choice["auprc"]) == {"next", "baseline"}
    assert not (ARTEFACTS / "teacher_choice.json").exists()  # a smoke run (--limit) decides nothing
    assert ev.main(["teacher", "--no-baseline"] + common) == 0  # the next teacher only (its built model is reused)
    alone = json.loads((tmp_path / "results" / "guard_mini_t_teacher_heldout.json").read_text())
    assert list(alone["models"]) == [str(tmp_path / "work" / "teacher-t")] and alone["n"] == 2
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) >= {"auprc", "recall_at_fpr10"}
    built = (tmp_path / "work" / "teacher-t" / "model.safetensors").stat().st_mtime_ns
    assert ev.teacher_dir(ARTEFACTS, tmp_path / "work", "t").samefile(tmp_path / "work" / "teacher-t")
    assert (tmp_path / "work" / "teacher-t" / "model.safetensors").stat().st_mtime_ns == built  # current: kept
    (tmp_path / "work" / "teacher-t" / "artefacts.sha256").write_text("other artefacts")
    ev.teacher_dir(ARTEFACTS, tmp_path / "work", "t")
    assert (tmp_path / "work" / "teacher-t" / "model.safetensors").stat().st_mtime_ns != built  # stale: rebuilt
