"""How the long-input policy judges long documents: recall on a harmful request hidden in benign text, and the
false-positive rate on the same kind of text without one (issue 18, inputs of any length).

    python benchmarks/bench_long_docs.py --data DATA/dev.jsonl [--pte MODEL.pte] [--docs 25] [--tokens 2400]

Documents are built from the dev split only (never test or held-out sources): benign records joined by blank lines
up to ``--tokens`` tokens, either instructions (Dolly prompts, self-instruct, GSM8K) or prose (Dolly responses);
half the documents get one short harmful request (dev unsafe prompts under 80 tokens from AdvBench, CatQA,
StrongREJECT, HarmfulQA, GPTFuzzer) at a random paragraph boundary. Each is classified once by ``guard.classify``
with the default long-input policy (guard.runtime.long). Writes STEM.json and STEM.md with the machine, versions,
command and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import guard
from guard.bench.schema import command, environment, write_result

ROOT = Path(__file__).resolve().parents[1]
FILLERS = {"instructions": {"dolly_prompt", "self_instruct", "gsm8k"}, "prose": {"dolly_response"}}
NEEDLES = {"advbench", "catqa", "strongreject", "harmfulqa", "gptfuzz", "gptfuzz_question"}


def documents(records: list[dict], tok, kind: str, n: int, tokens: int, seed: int = 0) -> list[tuple[str, bool]]:
    rng = random.Random(seed)
    fill = [m["content"] for r in records if r["source"] in FILLERS[kind] and r["label"] == "safe"
            for m in r["messages"] if m["role"] == ("assistant" if kind == "prose" else "user")]
    needles = [r["messages"][0]["content"] for r in records if r["source"] in NEEDLES and r["label"] == "unsafe"
               and len(r["messages"]) == 1 and len(tok.encode(r["messages"][0]["content"])) < 80]

    def doc(needle: str | None) -> str:
        parts, size = [], 0
        while size < tokens:
            parts.append(rng.choice(fill))
            size += len(tok.encode(parts[-1]))
        if needle:
            parts.insert(rng.randrange(len(parts) + 1), needle)
        return "\n\n".join(parts)

    return [(doc(x), True) for x in rng.sample(needles, n)] + [(doc(None), False) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dev.jsonl of a `guard data build`")
    ap.add_argument("--pte", help="default: the default model")
    ap.add_argument("--docs", type=int, default=25, help="documents with a harmful request, and as many without")
    ap.add_argument("--tokens", type=int, default=2400)
    ap.add_argument("--fillers", nargs="+", default=list(FILLERS), choices=list(FILLERS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "long_docs")
    a = ap.parse_args()
    records = [json.loads(line) for line in open(a.data) if line.strip()]
    g = guard.load(pte=a.pte) if a.pte else guard.load()
    g.classify("warm-up: how do I bake bread?")
    rows = []
    for kind in a.fillers:
        docs = documents(records, g.tokenizer, kind, a.docs, a.tokens)
        hits, times, windows = {True: 0, False: 0}, [], []
        for text, harmful in docs:
            t0 = time.perf_counter()
            v = g.classify(text)
            times.append(time.perf_counter() - t0)
            windows.append((v.truncation or {}).get("windows", 1))
            hits[harmful] += v.decision != "safe"
        rows.append({"filler": kind, "docs": len(docs), "recall": round(hits[True] / a.docs, 3),
                     "fpr": round(hits[False] / a.docs, 3), "median_s": round(statistics.median(times), 3),
                     "mean_windows": round(statistics.mean(windows), 2), "load_avg": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps(rows[-1]), flush=True)
    doc = {"command": command(), "environment": environment(), "model": str(g.source.path), "tokens": a.tokens,
           "rows": rows}
    md = [f"# Long documents ({a.tokens} tokens) under the default long-input policy", "",
          f"- model: {doc['model']}; command: `{doc['command']}`",
          f"- machine: {doc['environment']['machine']}", "",
          "| filler | documents | recall (harmful request inside) | FPR (benign only) | windows (mean) | median s | "
          "load avg |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['filler']} | {r['docs']} | {r['recall']} | {r['fpr']} | {r['mean_windows']} | {r['median_s']} | "
           f"{r['load_avg'][0]} |" for r in rows]
    write_result(a.out, doc, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
