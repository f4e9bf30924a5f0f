"""guard bench: latency of a .pte or an eager directory against the 30 tok/s and 2.5 s targets."""

from __future__ import annotations

import json
from pathlib import Path

from guard.errors import GuardError


def add_arguments(p):
    p.add_argument("model", nargs="?", help="a .pte file or a Hugging Face directory (default: the default model)")
    p.add_argument("--runs", type=int, default=5, help="measured runs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs, not reported in the summary (default 1)")
    p.add_argument("--prompt-tokens", default="16,40,128,256", help="user-message lengths to sweep (default 16,40,128,256)")
    p.add_argument("--decode-tokens", type=int, default=16, help="decode steps timed per run (default 16)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="eager backend precision")
    p.add_argument("--label", help="name of this run in tables and charts")
    p.add_argument("--out", default="bench", help="output path without suffix: writes OUT.json, OUT.md, OUT.png (default ./bench)")
    p.add_argument("--compare", nargs="+", metavar="JSON", help="compare saved runs instead of measuring: one line per run")
    p.add_argument("--device", metavar="android[:SERIAL]|local", help="run on an Android phone over adb (or 'local': the same "
                   "command sequence on this host with the Python runner)")
    p.add_argument("--runner", metavar="PATH", help="the guard_runner binary to push (arm64 build of android_runner/)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before a device run counts as hung (default 900)")


def run(args) -> int:
    from guard.bench.report import write

    if args.compare:
        docs = []
        for f in args.compare:
            try:
                docs.append(json.loads(Path(f).read_text()))
            except (OSError, ValueError) as e:
                raise GuardError(f"cannot read bench results {f}: {e}") from None
            if docs[-1].get("schema") != "guard-bench-1":
                raise GuardError(f"{f} is not a guard bench result (schema guard-bench-1)")
        for p in write(docs, Path(args.out), overwrite=False):  # an earlier report under the same name is kept
            print(p)
        return 0
    from guard.bench import BenchConfig, run_bench

    try:
        lengths = [int(x) for x in args.prompt_tokens.split(",") if x.strip()]
    except ValueError:
        raise GuardError(f"--prompt-tokens must be comma-separated integers, not {args.prompt_tokens!r}") from None
    if not lengths or min(lengths) < 2 or args.runs < 1 or args.warmup < 0 or args.decode_tokens < 1:
        raise GuardError("need --runs >= 1, --warmup >= 0, --decode-tokens >= 1 and prompt lengths >= 2")
    model = args.model
    if model is None:
        from guard.defaults import default_model

        _, model, _ = default_model()
    if args.device:
        return run_device(args, model)
    cfg = BenchConfig(runs=args.runs, warmup=args.warmup, prompt_tokens=lengths, decode_tokens=args.decode_tokens, dtype=args.dtype)
    show = lambda r: print(f"  run {r['run']}{' (warm-up)' if r['warmup'] else ''}: {r['message_tokens']:>4} msg tokens  "
                           f"TTFT {r['ttft_ms']:.0f} ms  prefill {r['prefill_tok_s']:.0f} tok/s  decode {r['decode_tok_s']:.1f} tok/s  "
                           f"verdict {r['verdict_ms']:.0f} ms", flush=True)
    return report(args, run_bench(str(model), cfg, progress=show))


def report(args, doc: dict) -> int:
    """Label, write OUT.json/.md/.png and print the table: the same for host and device runs."""
    from guard.bench.report import markdown, write

    if args.label:
        doc["label"] = args.label
    paths = write([doc], Path(args.out))
    print(markdown([doc]))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def run_device(args, model) -> int:
    import sys
    import tempfile

    from guard.bench import android

    if not str(model).endswith(".pte"):
        raise GuardError("--device runs an exported .pte; export it first with `guard export`")
    kind, _, serial = args.device.partition(":")
    if kind not in ("local", "android"):
        raise GuardError(f"--device must be android, android:SERIAL or local, not {args.device!r}")
    if kind == "android" and not args.runner:
        raise GuardError("--device android needs --runner PATH: an arm64 guard_runner built from android_runner/ (docs/android.md)")
    # the local "device" is a scratch folder holding copies of the model and runner: removed when the run ends
    with tempfile.TemporaryDirectory(prefix="guard-device-") as scratch:
        if kind == "local":
            transport, abi = android.LocalTransport(Path(scratch) / "device"), None
            runner = args.runner
            if runner is None:  # the Python host runner behind the same command-line contract
                runner = Path(scratch) / "guard_runner"
                runner.write_text(f"#!/bin/sh\nexec {sys.executable} -m guard.bench.runner_main \"$@\"\n")
                runner.chmod(0o755)
        else:
            transport, runner, abi = android.AdbTransport(serial or None), args.runner, "arm64-v8a"
        abi = abi or transport.shell("getprop ro.product.cpu.abi").out.rpartition("__rc=")[0].strip()
        doc = android.run_on_device(transport, Path(model), Path(runner), runs=args.runs, warmup=args.warmup,
                                    prompt_tokens=args.prompt_tokens, expected_abi=abi, timeout=args.timeout)
    doc["command"] = " ".join(["guard"] + sys.argv[1:])
    return report(args, doc)
