"""`guard calibrate MODEL --data DEV.jsonl`: fit p_unsafe's scale on labelled data; writes calibration.json."""

from __future__ import annotations

import json
import sys


def add_arguments(p) -> None:
    p.add_argument("model", help="eager Hugging Face directory or .pte file")
    p.add_argument("--data", required=True, help="labelled JSONL (docs/data.md); use a dev split, never the test split")
    p.add_argument("--split", default=None, help="only records of this split (e.g. dev)")
    p.add_argument("--limit", type=int, default=None, help="first N records only")
    p.add_argument("--out", default=None, help="where to write (default: calibration.json beside the .pte / in the directory)")
    from guard.cli.classify import add_policy_arguments

    add_policy_arguments(p, scoring=False)  # the categories shown to the model; threshold etc. do not apply


def run(args) -> int:
    from guard.eval.calibrate import calibrate, path_for
    from guard.cli.eval import _guard
    from guard.train.data import load_jsonl
    from guard.errors import GuardError

    if args.limit is not None and args.limit < 2:
        raise GuardError(f"--limit must be at least 2, got {args.limit}")
    records = load_jsonl(args.data, args.split)[: args.limit]
    args.uncalibrated, args.threshold = True, 0.5  # the raw score is fitted; an existing calibration.json is replaced
    guard = _guard(args.model, args)
    command = "guard calibrate " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["calibrate"] else sys.argv[1:])
    cal, report = calibrate(guard, records, source=f"{len(records)} records of {args.data}; {command}",
                            progress=sys.stderr.isatty())
    out = cal.save(args.out or path_for(args.model))
    print(json.dumps({"calibration": {"a": cal.a, "b": cal.b, "n": cal.n}, "written": str(out), **report}, indent=2))
    return 0
