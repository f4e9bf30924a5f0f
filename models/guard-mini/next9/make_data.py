"""next9's training file: the current build (`guard data build`, data-v7) less its robustness augmentations
(every record whose source starts with `aug_`, written by guard.train.augment). dev, test and heldout are the
build's own files, so choice, calibration and the card read the same records as every build:

    guard data build --root ../shared/data --out /work/home-mini/data-v7
    python models/guard-mini/next9/make_data.py --data /work/home-mini/data-v7 --out /work/home-mini/data-next9

Writes OUT/{train,dev,test,heldout}.jsonl and OUT/make_data.json (what was dropped, and the train file's sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from guard.errors import GuardError
from guard.train.data import load_jsonl

DROP_PREFIX = "aug_"


def without_augmentations(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    keep, dropped = [], {}
    for r in records:
        if r["source"].startswith(DROP_PREFIX):
            dropped[r["source"]] = dropped.get(r["source"], 0) + 1
        else:
            keep.append(r)
    return keep, dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="the current build (guard data build --out)")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    try:
        keep, dropped = without_augmentations(load_jsonl(a.data / "train.jsonl"))
    except (GuardError, OSError, KeyError) as e:
        sys.exit(f"make_data: {e}")
    a.out.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in keep)
    (a.out / "train.jsonl").write_text(body)
    for name in ("dev.jsonl", "test.jsonl", "heldout.jsonl"):
        shutil.copy(a.data / name, a.out / name)
    report = {"data": str(a.data), "train": len(keep), "dropped": dropped,
              "train_sha256": hashlib.sha256(body.encode()).hexdigest()}
    (a.out / "make_data.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
