"""guard calibrate MODEL --data DEV.jsonl: fit p_unsafe's scale (Platt scaling of the verdict margin) on labelled
dev data and write calibration.json beside the .pte / inside the directory, where every loader picks it up."""

from __future__ import annotations

HELP = "fit p_unsafe's scale (Platt) on labelled dev data; writes calibration.json beside the model"

import json
import sys

from guard.cli.common import add_model_arguments, add_policy_arguments, command_line, load_guard, model_of


def add_arguments(p) -> None:
    add_model_arguments(p, positional=True)
    p.add_argument("--data", required=True, help="labelled JSONL (docs/data.md); use a dev split, never the test split")
    p.add_argument("--split", default=None, help="only records of this split (e.g. dev)")
    p.add_argument("--limit", type=int, default=None, help="first N records only")
    p.add_argument("--out", default=None, help="where to write (default: calibration.json beside the .pte / in the directory)")
    add_policy_arguments(p, scoring=False)  # the categories shown to the model; threshold etc. do not apply


def run(args) -> int:
    from guard.errors import GuardError
    from guard.eval.calibrate import calibrate, path_for
    from guard.train.data import load_jsonl

    if args.limit is not None and args.limit < 2:
        raise GuardError(f"--limit must be at least 2, got {args.limit}")
    records = load_jsonl(args.data, args.split)[: args.limit]
    guard = load_guard(args, model_of(args), calibrated=False)  # the raw score is fitted; an existing file is replaced
    cal, report = calibrate(guard, records, source=f"{len(records)} records of {args.data}; {command_line('calibrate')}",
                            progress=sys.stderr.isatty())
    out = cal.save(args.out or path_for(guard.source.path))
    print(json.dumps({"calibration": {"a": cal.a, "b": cal.b, "n": cal.n}, "written": str(out), **report}, indent=2))
    return 0
