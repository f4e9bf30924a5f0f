"""`guard data build`: public moderation datasets -> labelled JSONL splits (format in docs/data.md)."""

from __future__ import annotations

HELP = "build labelled train/dev/test JSONL from the public moderation datasets (docs/data.md)"

import json


def add_arguments(p) -> None:
    p.add_argument("action", choices=["build"], help="build: read the datasets and write all/train/dev/test JSONL")
    p.add_argument("--root", default="../shared/data", help="folder holding the public datasets (default ../shared/data)")
    p.add_argument("--out", required=True, help="new output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-source caps' sampling")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="leave out the robustness augmentations (train records of source aug_*; docs/data.md)")
    p.add_argument("--exclude-source", dest="exclude", action="append", default=[], metavar="SOURCE",
                   help="leave this source's records out of the train split (dev, test and held-out unchanged; a 'source' name of the build; repeatable)")
    p.add_argument("--adjacent-share", type=float, default=None, metavar="F",
                   help="repeat the safety-adjacent benign train records until they are this share of the train split (0 < F < 1; docs/data.md)")
    p.add_argument("--unsafe-share", type=float, default=None, metavar="F",
                   help="drop unsafe train records (the same fraction of every source) until they are this share of the train split, counted after --adjacent-share's copies (0 < F < 1; docs/data.md)")


def run(args) -> int:
    from guard.train.data import build

    stats = build(args.root, args.out, args.seed, augment=args.augment, exclude_sources=args.exclude,
                  adjacent_share=args.adjacent_share, unsafe_share=args.unsafe_share)
    print(json.dumps({"out": args.out, "total": stats["total"], "splits": stats["splits"]}, indent=2))
    return 0
