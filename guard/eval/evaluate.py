"""`guard eval`: precision, recall, F1, false-positive rate, AUPRC, per-category recall, agreement and latency.

Works with any runner (eager directory or .pte) through ``guard.runtime.load``; results are JSON + Markdown.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from guard.bench.schema import write_result
from guard.eval.adversarial import flip_rates, to_markdown as adversarial_markdown
from guard.format.categories import covered_codes
from guard.train.data import CATEGORIES


def auprc(y: list[bool], score: list[float]) -> float | None:
    """Average precision (area under the precision-recall curve, step interpolation); None without unsafe records,
    like ``recall_at_fpr``, so that result files stay strict JSON."""
    pos = sum(y)
    if pos == 0:
        return None
    order = sorted(range(len(y)), key=lambda i: -score[i])
    tp = fp = 0
    ap = 0.0
    for i in order:
        if y[i]:
            tp += 1
            ap += tp / (tp + fp) / pos
        else:
            fp += 1
    return ap


def recall_at_fpr(y: list[bool], score: list[float], fpr: float = 0.10) -> float | None:
    """Recall at the lowest threshold that flags at most ``fpr`` of the safe records: how well the scores rank, at
    an operating point, whatever threshold the guard uses (None without safe or unsafe records)."""
    neg = sorted((s for s, t in zip(score, y) if not t), reverse=True)
    pos = [s for s, t in zip(score, y) if t]
    if not neg or not pos:
        return None
    k = int(fpr * len(neg))  # this many false positives are allowed: flag only scores above the (k+1)-th highest safe
    thr = neg[k] if k < len(neg) else float("-inf")
    return sum(s > thr for s in pos) / len(pos)


def metrics(records: list[dict], preds: list[dict]) -> dict:
    """``preds``: per record {"unsafe": bool, "p_unsafe": float, "categories": [...], "latency_ms": float}."""
    y = [r["label"] == "unsafe" for r in records]
    yhat = [p["unsafe"] for p in preds]
    tp = sum(a and b for a, b in zip(yhat, y))
    fp = sum(a and not b for a, b in zip(yhat, y))
    fn = sum(b and not a for a, b in zip(yhat, y))
    neg = sum(not b for b in y)
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    adj = [p["unsafe"] for p, r in zip(preds, records) if r.get("adjacent")]
    # what the guard should report for each label code under its policy (preds' "expected"; S14 is S2 under S1-S13)
    want = [p.get("expected") or {c: [c] for c in r.get("categories", [])} for p, r in zip(preds, records)]
    per_cat = {}
    for c in CATEGORIES:
        idx = [i for i, r in enumerate(records) if c in r.get("categories", [])]
        if idx:
            per_cat[c] = {"n": len(idx), "recall": sum(yhat[i] for i in idx) / len(idx),
                          "category_recall": sum(any(k in preds[i].get("categories", []) for k in want[i][c])
                                                 for i in idx) / len(idx)}
    lat = [p["latency_ms"] for p in preds if p.get("latency_ms") is not None]
    caught = [i for i in range(len(records)) if y[i] and yhat[i]]
    exact = sum(sorted(preds[i].get("categories", [])) == sorted({k for v in want[i].values() for k in v}) for i in caught)
    return {
        "hazard_exact": exact / len(caught) if caught else None, "n_hazard_exact": len(caught),
        "n": len(records), "unsafe": sum(y), "precision": prec, "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "fpr": fp / max(neg, 1),
        "fpr_adjacent": sum(adj) / len(adj) if adj else None, "n_adjacent": len(adj),
        "auprc": auprc(y, [p["p_unsafe"] for p in preds]), "per_category": per_cat,
        "recall_at_fpr10": recall_at_fpr(y, [p["p_unsafe"] for p in preds], 0.10),
        "per_source": per_source(records, yhat),
        "latency_ms": {"mean": statistics.mean(lat), "p50": statistics.median(lat), "max": max(lat)} if lat else None,
    }


def per_source(records: list[dict], yhat: list[bool]) -> dict:
    """By each record's ``source``: how many safe and unsafe records, the share of safe ones flagged (FPR) and of
    unsafe ones caught (recall). Shows which dataset the false positives come from."""
    out: dict = {}
    for r, flagged in zip(records, yhat):
        d = out.setdefault(r.get("source") or "(none)", {"n_safe": 0, "fp": 0, "n_unsafe": 0, "tp": 0})
        if r["label"] == "unsafe":
            d["n_unsafe"] += 1
            d["tp"] += flagged
        else:
            d["n_safe"] += 1
            d["fp"] += flagged
    return {k: {"n_safe": d["n_safe"], "fpr": d["fp"] / d["n_safe"] if d["n_safe"] else None,
                "n_unsafe": d["n_unsafe"], "recall": d["tp"] / d["n_unsafe"] if d["n_unsafe"] else None}
            for k, d in sorted(out.items())}


def agreement(a: list[dict], b: list[dict]) -> dict:
    same = sum(x["unsafe"] == y["unsafe"] for x, y in zip(a, b))
    cats = sum(sorted(x.get("categories", [])) == sorted(y.get("categories", [])) for x, y in zip(a, b))
    return {"verdict_agreement": same / max(len(a), 1), "category_agreement": cats / max(len(a), 1),
            "max_abs_p_unsafe_diff": max((abs(x["p_unsafe"] - y["p_unsafe"]) for x, y in zip(a, b)), default=0.0)}


def predict(guard, records: list[dict], progress: bool = False, segments: bool = True) -> list[dict]:
    """Classify each record's conversation with a guard.runtime.classifier.Guard (``segments``: with its segment
    checks, guard.runtime.segments)."""
    from tqdm import tqdm

    out = []
    for r in tqdm(records, desc="eval", unit="ex", disable=not progress):
        t0 = time.perf_counter()
        v = guard.classify(r["messages"], segments=segments)
        out.append({"unsafe": v.blocked, "decision": v.decision, "p_unsafe": v.p_unsafe, "margin": v.margin,
                    "categories": [h.code for h in v.categories], "latency_ms": (time.perf_counter() - t0) * 1e3,
                    "expected": {c: covered_codes([c], guard.policy) for c in r.get("categories", [])}})
    return out


def evaluate(loaders, records: list[dict], out: str | Path, *, data: str = "", split: str | None = None,
             command: str = "", progress: bool | None = None, note: str = "") -> str:
    """Evaluate the guards that ``loaders`` (callables, each returning a Guard) load, one at a time, on ``records``;
    writes OUT.json and OUT.md (two guards: their agreement too) and returns the Markdown."""
    import sys

    from guard.bench.schema import environment

    progress = sys.stderr.isatty() if progress is None else progress
    report = {"data": data, "split": split, "n": len(records), "models": {}, "environment": environment(), "command": command,
              "note": note}
    preds = []
    for load in loaders:
        guard = load()
        name = str(guard.source.path)
        preds.append(predict(guard, records, progress=progress))
        report["models"][name] = metrics(records, preds[-1])
        if any("base_id" in r for r in records):  # an adversarial suite (scripts/make_adversarial_suite.py)
            report["models"][name]["adversarial"] = flip_rates(records, preds[-1])
        cal = guard.calibration
        report.setdefault("calibration", {})[name] = {"a": cal.a, "b": cal.b, "n": cal.n, "source": cal.source} if cal else None
        del guard  # one model in memory at a time
    if len(preds) == 2:
        report["agreement"] = agreement(*preds)
    write_report(report, out)
    return to_markdown(report)


def to_markdown(report: dict) -> str:
    names = list(report["models"])
    rows = [("F1", "f1"), ("precision", "precision"), ("recall", "recall"), ("FPR (all safe)", "fpr"),
            ("FPR (safety-adjacent)", "fpr_adjacent"), ("AUPRC", "auprc"),
            ("recall at FPR 0.10 (any threshold)", "recall_at_fpr10"),
            ("hazard codes exact (caught unsafe)", "hazard_exact")]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    title = f"# guard eval: {report['data']}" + (f" [{report['split']}]" if report.get("split") else "")
    lines = [f"{title} ({report['n']} records)", ""] + ([report["note"], ""] if report.get("note") else [])
    lines += ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(report["models"][m].get(key)) for m in names) + " |")
    lines.append("| latency mean ms | " + " | ".join(fmt((report["models"][m]["latency_ms"] or {}).get("mean")) for m in names) + " |")
    cal = report.get("calibration", {})
    if any(cal.values()):
        lines.append("| p_unsafe calibration | " + " | ".join(
            f"a={cal[m]['a']:.3f} b={cal[m]['b']:+.3f} (n={cal[m]['n']})" if cal.get(m) else "none" for m in names) + " |")
    lines += ["", "## Per category (unsafe recall / category recall)", "", "| category | n | " + " | ".join(names) + " |",
              "|---|---" + "|---" * len(names) + "|"]
    first = report["models"][names[0]]["per_category"]
    for c, v in first.items():
        cells = [f"{report['models'][m]['per_category'][c]['recall']:.3f} / {report['models'][m]['per_category'][c]['category_recall']:.3f}"
                 for m in names]
        lines.append(f"| {c} | {v['n']} | " + " | ".join(cells) + " |")
    sources = report["models"][names[0]].get("per_source") or {}
    if sources:
        lines += ["", "## Per source (safe records flagged: FPR / unsafe records caught: recall)", "",
                  "| source | safe n | unsafe n | " + " | ".join(names) + " |", "|---|---|---" + "|---" * len(names) + "|"]
        for k, v in sources.items():
            cells = [f"{fmt(report['models'][m]['per_source'][k]['fpr'])} / {fmt(report['models'][m]['per_source'][k]['recall'])}"
                     for m in names]
            lines.append(f"| {k} | {v['n_safe']} | {v['n_unsafe']} | " + " | ".join(cells) + " |")
    for m in names:
        if report["models"][m].get("adversarial"):
            lines += adversarial_markdown(m, report["models"][m]["adversarial"])
    if "agreement" in report:
        a = report["agreement"]
        lines += ["", f"Agreement: verdict {a['verdict_agreement']:.3f}, categories {a['category_agreement']:.3f}, "
                      f"max |Δp_unsafe| {a['max_abs_p_unsafe_diff']:.4f}"]
    lines += ["", f"Environment: {json.dumps(report['environment'])}", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> None:
    write_result(out, report, to_markdown(report))
