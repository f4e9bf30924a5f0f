"""How well a guard names the hazard: its code distribution on the flagged unsafe prompts of a labelled split.

    python benchmarks/hazard_codes.py --pte MODEL.pte --data DATA/dev.jsonl --out STEM [--compare OTHER.pte]

For each unsafe user prompt the guard flags (first token 'unsafe' ahead of 'safe'), it reads the probability of every
code the policy shows (S1-S13, the default list) after the forced 'unsafe\\nS': one prefill gives the first digit,
one decode step after '1' gives S1 / S10-S13 (a single-digit code other than S1 is taken to end there). From it:
- exact match of the greedy code with the label (S14 counts as S2 under this list), per code;
- the same after re-weighting the codes by their share of the training split (logit adjustment,
  log p(code) - tau * log prior(code), tau 0-1.5): whether the codes are there but outweighed by the frequent ones.
Uses the runner's public prefill/decode (no prefix cache: every prompt is prefilled whole). Writes STEM.json/.md.
Tune only on dev; the held-out sources are never used here.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import numpy as np

import guard
from guard.bench.schema import command, environment, write_result
from guard.format.categories import Policy, covered_codes
from guard.format.prompt import encode

CODES = [f"S{i}" for i in range(1, 14)]
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def log_softmax(d: dict) -> dict:
    v = np.array(list(d.values()), dtype=np.float64)
    v = v - v.max()
    return dict(zip(d, v - math.log(np.exp(v).sum())))


def columns(g) -> tuple:
    """-> (token id -> logit column, {digit: token id}, the comma's token id) for guard ``g``."""
    r, tok = g.runner, g.tokenizer
    cols = {tid: i for i, tid in enumerate(r.output_ids)} if r.output_ids else None
    col = (lambda tid: cols[tid]) if cols else (lambda tid: tid)
    return col, {str(d): tok.encode(str(d))[0] for d in range(10)}, tok.encode(",")[0]


def code_logprobs(g, ids: list[int], cols: tuple) -> tuple[float, dict] | None:
    """-> (margin unsafe - safe, {code: log p}) for one prompt, or None when it does not fit."""
    r, t = g.runner, g.tokenizer.tokens
    col, digit, comma = cols
    ids = ids + [t.blank]
    if len(ids) + 8 > r.max_seq_len:
        return None
    first = np.asarray(r.prefill(ids, 0), dtype=np.float64)
    margin = first[col(t.unsafe)] - first[col(t.safe)]
    lg = np.asarray(r.prefill([t.unsafe, t.newline, t.s], len(ids)), dtype=np.float64)
    f = log_softmax({d: lg[col(i)] for d, i in digit.items()})
    lg = np.asarray(r.decode(digit["1"], len(ids) + 3), dtype=np.float64)
    ends = {"end": lg[col(t.eot)], ",": lg[col(comma)]}
    s = log_softmax({d: lg[col(i)] for d, i in digit.items()} | ends)
    out = {}
    for c in CODES:
        d = c[1:]
        out[c] = (f["1"] + np.logaddexp(s["end"], s[","]) if d == "1" else f["1"] + s[d[1]] if len(d) == 2 else f[d])
    return float(margin), {k: float(v) for k, v in out.items()}


def train_prior(data: Path) -> dict:
    n = collections.Counter()
    path = data.parent / "train.jsonl"
    for line in open(path):
        r = json.loads(line)
        if r["label"] == "unsafe":
            n.update(covered_codes(r.get("categories", []), Policy()))
    tot = sum(n.values())
    return {c: math.log((n[c] + 1) / (tot + len(CODES))) for c in CODES}


def score(rows: list[dict], prior: dict, tau: float) -> dict:
    ok, per, per_n = 0, collections.Counter(), collections.Counter()
    for r in rows:
        best = max(CODES, key=lambda c: r["logp"][c] - tau * prior[c])
        ok += [best] == r["want"]
        for c in r["want"]:
            per_n[c] += 1
            per[c] += best == c
    return {"tau": tau, "exact": ok / max(len(rows), 1), "n": len(rows),
            "per_code": {c: {"n": per_n[c], "exact": per[c] / per_n[c]} for c in CODES if per_n[c]}}


def run(pte: str, records: list[dict], prior: dict) -> dict:
    g = guard.load(model=pte, calibrated=False)
    cols, rows = columns(g), []
    for rec in records:
        got = code_logprobs(g, encode(rec["messages"], Policy(), g.tokenizer).ids, cols)
        if got is None or got[0] < 0:  # too long, or not flagged
            continue
        rows.append({"id": rec.get("id"), "want": sorted(covered_codes(rec["categories"], Policy())), "logp": got[1]})
    return {"pte": pte, "flagged": len(rows), "by_tau": [score(rows, prior, t) for t in TAUS]}


def markdown(doc: dict) -> str:
    out = [f"# Hazard codes on {doc['data']} ({doc['n_unsafe']} unsafe user prompts)", "",
           f"- command: `{doc['command']}`", f"- environment: {json.dumps(doc['environment'])}", ""]
    for m in doc["models"]:
        out += [f"## {m['pte']} ({m['flagged']} flagged)", "", "| tau | exact | " + " | ".join(CODES) + " |",
                "|---" * (len(CODES) + 2) + "|"]
        for s in m["by_tau"]:
            cells = [f"{s['per_code'][c]['exact']:.2f}" if c in s["per_code"] else "-" for c in CODES]
            out.append(f"| {s['tau']:g} | {s['exact']:.3f} | " + " | ".join(cells) + " |")
        n = m["by_tau"][0]["per_code"]
        out += ["", "n per code: " + ", ".join(f"{c} {n[c]['n']}" for c in CODES if c in n), ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pte", required=True)
    ap.add_argument("--compare", help="a second .pte, measured the same way")
    ap.add_argument("--data", type=Path, required=True, help="a split of `guard data build` (train.jsonl beside it)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    records = [r for r in map(json.loads, open(a.data)) if r["label"] == "unsafe" and len(r["messages"]) == 1]
    prior = train_prior(a.data)
    doc = {"command": command(), "environment": environment(), "data": str(a.data), "n_unsafe": len(records),
           "models": [run(p, records, prior) for p in (a.pte, a.compare) if p]}
    md = markdown(doc)
    write_result(a.out, doc, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
