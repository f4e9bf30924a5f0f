"""The held-out sources without the look-alikes guard-mini v4 trained on.

guard-mini v4 (and its teacher) were trained before the held-out sources were chosen, on a build whose hash split put
~74 % of `coconot_contrast` in train (docs/data.md). Every model descended from v4 (v5-v8, the build in
models/guard-mini/next) may therefore be optimistic on that source. The split is a pure function of the record id
(`guard.train.data.split_of`), so the records v4 saw are known without its data. This script writes, from a
`guard data build` directory:

  unseen  every held-out unsafe record + the coconot_contrast records outside v4's train split (~99)
  seen    the coconot_contrast records in v4's train split (~280)

to a temporary directory (the data stays in ../shared/data) and runs `guard eval MODEL [--compare MODEL_B]` on each:
STEM_unseen.{json,md}, STEM_seen.{json,md}.

  python benchmarks/heldout_unseen.py --data DATA --out benchmarks/results/heldout_v4unseen_pte \\
      ~/.cache/ondevice-llamaguard/guard-mini/model.pte --compare WORK/mini/model.pte
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from guard.errors import GuardError
from guard.train.data import load_jsonl, split_of

SOURCE = "coconot_contrast"


def subsets(heldout: Path) -> dict[str, list[dict]]:
    records = load_jsonl(heldout)
    seen = [r for r in records if r["source"] == SOURCE and split_of(r["id"]) == "train"]
    ids = {r["id"] for r in seen}
    return {"unseen": [r for r in records if r["id"] not in ids], "seen": seen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--compare")
    ap.add_argument("--data", required=True, type=Path, help="a `guard data build` directory (heldout.jsonl)")
    ap.add_argument("--out", required=True, type=Path, help="output stem")
    a = ap.parse_args()
    try:
        parts = subsets(a.data / "heldout.jsonl")
    except GuardError as e:
        sys.exit(f"heldout_unseen: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in parts.items():
            path = Path(tmp) / f"heldout_{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
            cmd = [sys.executable, "-m", "guard", "eval", a.model, "--data", str(path), "--out", f"{a.out}_{name}"]
            cmd += ["--compare", a.compare] if a.compare else []
            print(name, len(records), "records:", " ".join(cmd[2:]), flush=True)
            if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
