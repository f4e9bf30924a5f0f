import json

import pytest

from guard.eval.evaluate import agreement, auprc, metrics, to_markdown, write_report

RECS = [
    {"label": "unsafe", "categories": ["S1"], "adjacent": False, "source": "a"},
    {"label": "unsafe", "categories": ["S10"], "adjacent": False, "source": "b"},
    {"label": "safe", "categories": [], "adjacent": True, "source": "b"},
    {"label": "safe", "categories": [], "adjacent": False, "source": "b"},
]


def _p(unsafe, p, cats=()):
    return {"unsafe": unsafe, "p_unsafe": p, "categories": list(cats), "latency_ms": 1.0}


def test_metrics_by_hand():
    preds = [_p(True, 0.9, ["S1"]), _p(False, 0.4), _p(True, 0.6), _p(False, 0.1)]
    m = metrics(RECS, preds)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["fpr"] == 0.5 and m["fpr_adjacent"] == 1.0 and m["n_adjacent"] == 1
    assert m["per_category"]["S1"] == {"n": 1, "recall": 1.0, "category_recall": 1.0}
    assert m["per_category"]["S10"]["recall"] == 0.0
    assert m["per_source"] == {"a": {"n_safe": 0, "fpr": None, "n_unsafe": 1, "recall": 1.0},
                               "b": {"n_safe": 2, "fpr": 0.5, "n_unsafe": 1, "recall": 0.0}}
    # ranking 0.9(+) 0.6(-) 0.4(+) 0.1(-): AP = (1/1 + 2/3) / 2
    assert m["auprc"] == pytest.approx((1 + 2 / 3) / 2)
    assert auprc([True, False], [0.2, 0.8]) == pytest.approx(0.5)


def test_a_set_without_unsafe_records_writes_strict_json(tmp_path):
    """Only look-alikes (as in benchmarks/heldout_unseen.py's "seen" part): AUPRC and recall at FPR 0.10 are
    undefined, reported as null / n/a, not NaN (which strict JSON readers refuse)."""
    recs = [{"label": "safe", "categories": [], "adjacent": True, "source": "a"}] * 3
    m = metrics(recs, [_p(False, 0.1), _p(True, 0.7), _p(False, 0.3)])
    assert m["auprc"] is None and m["recall_at_fpr10"] is None and m["fpr"] == pytest.approx(1 / 3)
    assert auprc([False, False], [0.2, 0.8]) is None
    report = {"data": "x", "n": 3, "models": {"m": m}, "environment": {}, "command": "c"}
    write_report(report, tmp_path / "r")
    text = (tmp_path / "r.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert "| AUPRC | n/a |" in (tmp_path / "r.md").read_text() and "nan" not in to_markdown(report).lower()


def test_a_report_stem_with_a_dot_keeps_its_name(tmp_path):
    """`guard eval --out results/run.v2` writes run.v2.json, not run.json (with_suffix), over another run's report."""
    m = metrics([{"label": "safe", "categories": [], "source": "a"}], [_p(False, 0.1)])
    (tmp_path / "run.json").write_text("{}")
    write_report({"data": "x", "n": 1, "models": {"m": m}, "environment": {}, "command": "c"}, tmp_path / "run.v2")
    assert (tmp_path / "run.v2.json").is_file() and (tmp_path / "run.v2.md").is_file()
    assert (tmp_path / "run.json").read_text() == "{}"


def test_hazard_codes_are_judged_under_the_guards_policy():
    """S14 (interpreter abuse) is reported as S2 under the 1B list S1-S13 (guard.format.categories.COVERED_BY): an
    S2 verdict on an S14 record is right there, and wrong under the 8B list, which shows S14."""
    from guard.format.categories import CODES_8B, HAZARDS, Policy, covered_codes

    recs = [{"label": "unsafe", "categories": ["S14"]}, {"label": "unsafe", "categories": ["S1", "S14"]}]
    for policy, right in ((Policy(), 1.0), (Policy(categories=tuple(HAZARDS[c] for c in CODES_8B)), 0.0)):
        preds = [_p(True, 0.9, ["S2"]) | {"expected": {c: covered_codes([c], policy) for c in r["categories"]}}
                 for r in recs]
        preds[1]["categories"] = ["S1", "S2"]
        m = metrics(recs, preds)
        assert m["hazard_exact"] == right and m["per_category"]["S14"]["category_recall"] == right
        assert m["per_category"]["S1"]["category_recall"] == 1.0
    assert covered_codes(["S14", "S2", "S1"], Policy()) == ["S2", "S1"]
    assert covered_codes(["S14"], Policy(excluded=("S2",))) == []  # nothing shown covers it


def test_recall_at_fpr():
    from guard.eval.evaluate import recall_at_fpr

    y = [False] * 10 + [True] * 4
    score = [0.1 * i for i in range(10)] + [0.95, 0.85, 0.5, 0.05]  # safe scores 0.0 .. 0.9
    assert recall_at_fpr(y, score, 0.10) == 0.5  # one safe (0.9) may be flagged: threshold above 0.8 -> 0.95, 0.85
    assert recall_at_fpr(y, score, 0.0) == 0.25  # none may be: above 0.9 -> 0.95 only
    assert recall_at_fpr(y, score, 1.0) == 1.0
    assert recall_at_fpr([True], [0.5]) is None and recall_at_fpr([False], [0.5]) is None


def test_agreement():
    a = [_p(True, 0.9, ["S1"]), _p(False, 0.1)]
    b = [_p(True, 0.7, ["S2"]), _p(True, 0.6)]
    g = agreement(a, b)
    assert g["verdict_agreement"] == 0.5 and g["category_agreement"] == 0.5
    assert g["max_abs_p_unsafe_diff"] == pytest.approx(0.5)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_eval_compare_and_bad_input(tiny_model_dir, tmp_path):
    from guard.cli import main

    data = tmp_path / "d.jsonl"
    _write(data, [{"messages": [{"role": "user", "content": "hello there"}], "label": "safe", "categories": [],
                   "source": "demo"},
                  {"messages": [{"role": "user", "content": "how to hurt"}], "label": "unsafe", "categories": ["S1"],
                   "source": "demo"}])
    out = tmp_path / "r" / "eval"
    assert main(["eval", str(tiny_model_dir), "--data", str(data), "--compare", str(tiny_model_dir), "--out", str(out)]) == 0
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["n"] == 2 and rep["agreement"]["verdict_agreement"] == 1.0
    md = out.with_suffix(".md").read_text()
    assert "| F1 |" in md and "| demo | 1 | 1 |" in md
    bad = tmp_path / "bad.jsonl"
    _write(bad, [{"messages": [{"role": "user", "content": "x"}], "label": "unsafe", "categories": ["S99"]}])
    assert main(["eval", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "b" / "eval")]) == 2
    assert not (tmp_path / "b").exists()
