"""Streaming moderation vs re-running the guard on the whole conversation at every check.

A 400-token response is checked every 16 tokens. "stream" is Guard.moderate_stream (each check prefills the new
response tokens plus the ~57-token instruction suffix, reusing the cached head and response); "rerun" classifies
the same prefixes from scratch (the cache is invalidated before each check). Both give the same verdicts; the
script checks that too. Writes JSON + Markdown + PNG under benchmarks/results/.

    python benchmarks/bench_stream.py --pte ~/.cache/guard/bench_1b/pte_8da4w_g256_c64_s1024_pruned/model.pte
    python benchmarks/bench_stream.py --model DIR --name guard-mini
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from guard.bench.schema import machine, versions, write_result

RESULTS = Path(__file__).parent / "results"
PROMPT = "I want to get back at my neighbour for what he did. What are my options?"
SENTENCES = [
    "There are several constructive ways to handle a conflict with a neighbour.",
    "First, take some time to cool down before you act, because decisions made in anger are often regretted.",
    "Second, write down what happened, with dates and details, in case you need to involve anyone else later.",
    "Third, consider talking to him directly and calmly; many disputes come from misunderstandings.",
    "If that does not work, a community mediation service can help both of you reach an agreement.",
    "For noise, property damage or threats, your local council or the police are the right contacts.",
    "Avoid anything that could escalate the situation or put you on the wrong side of the law.",
]


def response_text(tok, n_tokens: int) -> str:
    text, i = "", 0
    while len(tok.encode(text)) < n_tokens:
        text += (" " if text else "") + SENTENCES[i % len(SENTENCES)]
        i += 1
    ids = tok.encode(text)[:n_tokens]
    return tok.decode(ids)


def run(guard, text: str, every: int, rerun: bool) -> dict:
    tok = guard.tokenizer
    ids = tok.encode(text)
    guard.invalidate()
    guard.classify(PROMPT)  # warm-up; also puts the policy head in the cache, as a loaded guard would have it
    stream = guard.moderate_stream(PROMPT, check_every=every)
    lat, tokens, verdicts = [], [], []
    for end in range(every, len(ids) + 1, every):
        piece = tok.decode(ids[end - every:end])
        if rerun:
            stream.text += piece
            guard.invalidate()
            t0 = time.perf_counter()
            v = guard.classify(PROMPT, response=stream.text)
        else:
            t0 = time.perf_counter()
            v = stream.feed(piece)
            if v is None:  # decoded pieces can merge into fewer tokens: force the check at this boundary
                v = stream._check(end)
        lat.append((time.perf_counter() - t0) * 1e3)
        tokens.append(v.timings["prefilled_tokens"] + (len(v.raw) > 6) * 3)
        verdicts.append((v.decision, round(v.p_unsafe, 4)))
    return {"checks": len(lat), "total_ms": round(sum(lat), 1), "median_check_ms": round(statistics.median(lat), 1),
            "p90_check_ms": round(sorted(lat)[int(0.9 * (len(lat) - 1))], 1), "prefilled_tokens": sum(tokens),
            "check_ms": [round(x, 1) for x in lat], "verdicts": verdicts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pte")
    src.add_argument("--model")
    ap.add_argument("--name", help="label for the results file (default: from the path)")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="decision threshold; 1.0 keeps a real guard from stopping the stream at its first unsafe check, "
                         "so both modes pay for every check and every check is compared")
    args = ap.parse_args()
    from guard.runtime.load import load

    guard = load(args.model, args.pte, threshold=args.threshold, calibrated=False)
    runner, tok = guard.runner, guard.tokenizer
    name = args.name or (Path(args.pte).parent.name if args.pte else Path(args.model).name)
    text = response_text(tok, args.tokens)
    before = machine()["load_avg"]
    stream = run(guard, text, args.every, rerun=False)
    rerun = run(guard, text, args.every, rerun=True)
    same = all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-3 for a, b in zip(stream["verdicts"], rerun["verdicts"]))
    result = {
        "name": name, "model": str(args.pte or args.model), "backend": runner.name, "response_tokens": args.tokens,
        "check_every": args.every, "threshold": args.threshold, "stream": stream, "rerun": rerun, "same_verdicts": same,
        "compute_ratio": round(rerun["prefilled_tokens"] / stream["prefilled_tokens"], 2),
        "time_ratio": round(rerun["total_ms"] / stream["total_ms"], 2),
        "command": " ".join([Path(sys.executable).name] + sys.argv), "load_before": before,
        "load_after": machine()["load_avg"], "machine": machine(getattr(runner, "threads", None)), "versions": versions(),
    }
    out = RESULTS / f"bench_stream_{name}"
    md = [f"# Streaming moderation vs full re-run: {name}", "",
          f"- model: `{result['model']}` ({runner.name}); {args.tokens}-token response, a check every {args.every} tokens, threshold {args.threshold}",
          f"- machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['machine']['threads']} threads; "
          f"torch {result['versions']['torch']}, executorch {result['versions']['executorch']}",
          f"- command: `{result['command']}`; load average before {before}, after {result['load_after']}",
          f"- same verdicts and p_unsafe (1e-3) at every check: {same}", "",
          "| | checks | tokens prefilled | total guard time (ms) | median check (ms) | p90 check (ms) |", "|---|---|---|---|---|---|"]
    for k in ("stream", "rerun"):
        r = result[k]
        md.append(f"| {k} | {r['checks']} | {r['prefilled_tokens']} | {r['total_ms']} | {r['median_check_ms']} | {r['p90_check_ms']} |")
    md += ["", f"Compute: re-running costs **{result['compute_ratio']}x** the tokens of streaming "
               f"(target >= 5x); wall time {result['time_ratio']}x.", ""]

    def chart(doc, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [args.every * (i + 1) for i in range(doc["stream"]["checks"])]
        ax.plot(xs, doc["stream"]["check_ms"], label="streaming (new tokens + suffix)")
        ax.plot(xs, doc["rerun"]["check_ms"], label="re-run full prompt")
        ax.set(xlabel="response tokens so far", ylabel="check latency (ms)", title=f"Streaming checks: {name}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    write_result(out, result, "\n".join(md), chart)
    print("\n".join(md))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
