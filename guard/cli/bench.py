"""guard bench [MODEL]: load time, time to first token, prefill and decode tok/s, verdict latency and peak memory
of a .pte or an eager directory (default: the default model), against the 30 tok/s and 2.5 s targets; on this
host, on an Android phone over adb (--device android), or comparing saved runs (--compare)."""

from __future__ import annotations

HELP = "measure load time, time to first token, prefill/decode tok/s and verdict latency"

from pathlib import Path

from guard.cli.common import add_model_arguments, model_of


def add_arguments(p):
    add_model_arguments(p, positional=True)
    p.add_argument("--runs", type=int, default=5, help="measured runs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs, not reported in the summary (default 1)")
    p.add_argument("--prompt-tokens", default="16,40,128,256", help="user-message lengths to sweep (default 16,40,128,256)")
    p.add_argument("--decode-tokens", type=int, default=16, help="decode steps timed per run (default 16)")
    p.add_argument("--label", help="name of this run in tables and charts")
    p.add_argument("--out", default="bench", help="output path without suffix: writes OUT.json, OUT.md, OUT.png (default ./bench)")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="compare saved runs instead of measuring: one line per run")
    p.add_argument("--device", metavar="android[:SERIAL]|local", help="run on an Android phone over adb (or 'local': the same "
                   "command sequence on this host with the Python runner)")
    p.add_argument("--runner", metavar="PATH", help="the guard_runner binary to push (arm64 build of android_runner/)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before a device run counts as hung (default 900)")


def run(args) -> int:
    from guard.bench.report import read, write

    if args.compare:
        for p in write(read(args.compare), Path(args.out), overwrite=False):  # an earlier report under the same name is kept
            print(p)
        return 0
    from guard.bench import BenchConfig, run_bench

    cfg = BenchConfig.parse(runs=args.runs, warmup=args.warmup, prompt_tokens=args.prompt_tokens,
                            decode_tokens=args.decode_tokens, dtype=args.dtype)
    model = model_of(args)
    if args.device:
        from guard.bench.android import run_device
        from guard.runtime.load import resolve

        return report(args, run_device(resolve(model).path, args.device, args.runner, runs=args.runs, warmup=args.warmup,
                                       prompt_tokens=args.prompt_tokens, timeout=args.timeout))
    show = lambda r: print(f"  run {r['run']}{' (warm-up)' if r['warmup'] else ''}: {r['message_tokens']:>4} msg tokens  "
                           f"TTFT {r['ttft_ms']:.0f} ms  prefill {r['prefill_tok_s']:.0f} tok/s  decode {r['decode_tok_s']:.1f} tok/s  "
                           f"verdict {r['verdict_ms']:.0f} ms", flush=True)
    return report(args, run_bench(model, cfg, progress=show))


def report(args, doc: dict) -> int:
    """Label, write OUT.json/.md/.png and print the table: the same for host and device runs."""
    from guard.bench.report import markdown, write

    if args.label:
        doc["label"] = args.label
    paths = write([doc], Path(args.out))
    print(markdown([doc]))
    print("wrote " + ", ".join(map(str, paths)))
    return 0
