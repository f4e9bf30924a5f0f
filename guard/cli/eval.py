"""guard eval --data LABELLED.jsonl MODEL [--compare MODEL_B]: precision/recall/F1/FPR/AUPRC, per category and
per source, agreement between two models, latency. Writes STEM.json and STEM.md and prints the Markdown."""

from __future__ import annotations

HELP = "evaluate one or two models (dir or .pte) on labelled JSONL: P/R/F1/FPR/AUPRC, per category, agreement, latency"

from guard.cli.common import add_model_arguments, add_policy_arguments, command_line, load_guard, model_of


def add_arguments(p) -> None:
    add_model_arguments(p, positional=True)
    p.add_argument("--data", required=True, help="labelled JSONL (docs/data.md), or a `guard data build` directory: then the "
                   "in-distribution test split and the held-out sources are reported apart (STEM-test, STEM-heldout)")
    p.add_argument("--split", default=None, help="only records of this split (train/dev/test)")
    p.add_argument("--compare", default=None, metavar="MODEL_B", help="a second model (directory or .pte) to evaluate side by side")
    p.add_argument("--limit", type=int, default=None, help="first N records only")
    add_policy_arguments(p)
    p.add_argument("--out", default="eval", help="output path stem: writes STEM.json and STEM.md (default ./eval)")


SECTIONS = (("test", "In-distribution test split (same sources as training): a sanity check."),
            ("heldout", "Held-out sources (never trained on, never used for checkpoint choice or tuning): the number to optimise."))


def run(args) -> int:
    from pathlib import Path

    if Path(args.data).is_dir():
        for split, note in SECTIONS:
            if (Path(args.data) / f"{split}.jsonl").is_file():
                _run(args, str(Path(args.data) / f"{split}.jsonl"), split, f"{args.out}-{split}", note)
        return 0
    return _run(args, args.data, args.split, args.out)


def _run(args, data: str, split, out, note: str = "") -> int:
    from guard.eval.evaluate import evaluate
    from guard.train.data import load_jsonl

    records = load_jsonl(data, split)[: args.limit]
    guards = (lambda: load_guard(args, model_of(args)),) + ((lambda: load_guard(args, args.compare)),) * bool(args.compare)
    md = evaluate(guards, records, out, data=data, split=split, command=command_line("eval"), note=note)
    print(md)
    return 0
