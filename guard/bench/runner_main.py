"""The host runner: the command-line contract of android_runner's guard_runner, in Python.

    guard_runner --model model.pte --threads N --runs R --warmup W --prompt-tokens 16,40 --out stats.json

It writes the guard bench stats document (guard.bench.schema). The C++ runner prints the same schema.
"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="guard_runner")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prompt-tokens", default="16,40,128,256")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.threads:
        os.environ["GUARD_THREADS"] = str(a.threads)
    from guard.bench import BenchConfig, run_bench

    doc = run_bench(a.model, BenchConfig(runs=a.runs, warmup=a.warmup, prompt_tokens=[int(x) for x in a.prompt_tokens.split(",")]))
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
