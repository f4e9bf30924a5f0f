"""`guard eval --data LABELLED.jsonl MODEL [--compare MODEL_B]`: metrics side by side, JSON + Markdown."""

from __future__ import annotations

import sys


def add_arguments(p) -> None:
    p.add_argument("model", help="eager Hugging Face directory or .pte file")
    p.add_argument("--data", required=True, help="labelled JSONL (docs/data.md), or a `guard data build` directory: then the "
                   "in-distribution test split and the held-out sources are reported apart (STEM-test, STEM-heldout)")
    p.add_argument("--split", default=None, help="only records of this split (train/dev/test)")
    p.add_argument("--compare", default=None, help="a second model (directory or .pte) to evaluate side by side")
    p.add_argument("--limit", type=int, default=None, help="first N records only")
    from guard.cli.classify import add_policy_arguments

    add_policy_arguments(p)
    p.add_argument("--out", default="eval", help="output path stem: writes STEM.json and STEM.md (default ./eval)")


def _guard(path: str, args):
    from guard.runtime.classifier import Guard
    from guard.cli.classify import calibration_from_args, policy_from_args
    from guard.runtime.runner import load_runner

    runner, tok = load_runner(pte=path) if path.endswith(".pte") else load_runner(model=path)
    return Guard(runner, tok, policy_from_args(args), threshold=args.threshold, calibration=calibration_from_args(args, path))


SECTIONS = (("test", "In-distribution test split (same sources as training): a sanity check."),
            ("heldout", "Held-out sources (never trained on, never used for checkpoint choice or tuning): the number to optimise."))


def run(args) -> int:
    from pathlib import Path

    if Path(args.data).is_dir():
        out = args.out
        for split, note in SECTIONS:
            if (Path(args.data) / f"{split}.jsonl").is_file():
                _run(args, str(Path(args.data) / f"{split}.jsonl"), split, f"{out}-{split}", note)
        return 0
    return _run(args, args.data, args.split, args.out)


def _run(args, data: str, split, out, note: str = "") -> int:
    from guard.eval.adversarial import flip_rates
    from guard.train.data import load_jsonl
    from guard.eval.evaluate import agreement, environment, metrics, predict, write_report

    records = load_jsonl(data, split)[: args.limit]
    report = {"data": data, "split": split, "n": len(records), "models": {}, "environment": environment(), "note": note,
              "command": "guard eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:])}
    preds = {}
    for path in [args.model] + ([args.compare] if args.compare else []):
        guard = _guard(path, args)
        preds[path] = predict(guard, records, progress=sys.stderr.isatty())
        report["models"][path] = metrics(records, preds[path])
        if any("base_id" in r for r in records):
            report["models"][path]["adversarial"] = flip_rates(records, preds[path])
        cal = guard.calibration
        report.setdefault("calibration", {})[path] = {"a": cal.a, "b": cal.b, "n": cal.n, "source": cal.source} if cal else None
        del guard
    if args.compare:
        report["agreement"] = agreement(preds[args.model], preds[args.compare])
    write_report(report, out)
    print(open(str(out) + ".md").read())
    return 0
