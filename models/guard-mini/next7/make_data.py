"""next7's training file: the build v4's teacher was trained on, less the held-out sources and every record equal
or near to a held-out text (the filter `guard data build` applies today, guard.train.data.collect).

v4's teacher was trained at commit a67ca21 (2026-11-26) on that day's `guard data build` (train 6,583 records). That
build is rebuilt from the same `../shared/data` by the code of that commit, then filtered here; dev, test and
heldout are the current build's files (so choice, calibration and the card read the same records as every build):

    git worktree add /tmp/a67 a67ca21
    cd /tmp/a67 && python -c "from guard.data import build; build('/work/shared/data', '/work/home-mini/data-a67', 0)"
    cd -  # (from the worktree, so that its guard/ comes first; the repository root's would shadow PYTHONPATH)
    python models/guard-mini/next7/make_data.py --old /work/home-mini/data-a67 --data /work/home-mini/data-v7 \\
        --out /work/home-mini/data-next7

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
from guard.train.data import HELDOUT_NEAR_DUP, NO_NEAR_CHECK, load_jsonl, normalise, text_key
from guard.train.dedup import NearDup


def user_text(record: dict) -> str:
    return record["messages"][0]["content"]


def whole_text(record: dict) -> str:
    return text_key(m["content"] for m in record["messages"])


def filtered(old: list[dict], heldout: list[dict], other: list[dict], heldout_sources: set[str]) -> tuple[list[dict], dict]:
    """OLD's records less: held-out sources; a whole text equal to a held-out or a dev/test one (OTHER); a user turn
    equal to a held-out one, or near one (word 3-gram Jaccard >= HELDOUT_NEAR_DUP) unless its source is exempt."""
    index = NearDup(HELDOUT_NEAR_DUP)
    for i, r in enumerate(heldout):
        index.add(i, "\n".join(m["content"] for m in r["messages"]))
    held_users = {normalise(user_text(r)) for r in heldout}
    seen = {whole_text(r) for r in heldout} | {whole_text(r) for r in other}
    keep, dropped = [], {}

    def drop(why: str) -> None:
        dropped[why] = dropped.get(why, 0) + 1

    for r in old:
        if r["source"] in heldout_sources:
            drop(f"{r['source']}: held-out source")
        elif whole_text(r) in seen:
            drop(f"{r['source']}: same text as a held-out, dev or test record")
        elif normalise(user_text(r)) in held_users or (
                r["source"] not in NO_NEAR_CHECK and index.find(user_text(r)) is not None):
            drop(f"{r['source']}: near a held-out text")
        else:
            keep.append(r)
    return keep, dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, type=Path, help="the a67ca21 build (its train.jsonl)")
    ap.add_argument("--data", required=True, type=Path, help="the current build (dev, test, heldout)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--recipe", type=Path, default=Path(__file__).with_name("recipe.json"),
                    help="the recipe naming the held-out sources (default: next7's)")
    a = ap.parse_args()
    try:
        heldout_sources = set(json.loads(a.recipe.read_text())["heldout_sources"])
        heldout = load_jsonl(a.data / "heldout.jsonl")
        other = load_jsonl(a.data / "dev.jsonl") + load_jsonl(a.data / "test.jsonl")
        keep, dropped = filtered(load_jsonl(a.old / "train.jsonl"), heldout, other, heldout_sources)
    except (GuardError, OSError, KeyError, ValueError) as e:
        sys.exit(f"make_data: {e}")
    a.out.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in keep)
    (a.out / "train.jsonl").write_text(body)
    for name in ("dev.jsonl", "test.jsonl", "heldout.jsonl"):
        shutil.copy(a.data / name, a.out / name)
    report = {"old": str(a.old), "data": str(a.data), "train": len(keep), "dropped": dropped,
              "train_sha256": hashlib.sha256(body.encode()).hexdigest()}
    (a.out / "make_data.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
