"""The rank-8 teacher ablations of issue 18 side by side: what each training file holds, how each teacher ranks the
held-out sources.

    python benchmarks/teacher_ablation.py --run next7=/work/home-mini/data-next7 --run next8=/work/home-mini/data-v7 \
        ... --out benchmarks/results/teacher_ablation

Every NAME is a teacher under models/guard-mini/NAME trained with v4's recipe (rank 8, 820 steps of 8) on DIR's
train.jsonl. The held-out numbers are read from the committed report of its one read,
benchmarks/results/guard_mini_NAME_teacher_heldout.json (`models/guard-mini/evaluate.py teacher`); nothing is
evaluated here. The training file's make-up is counted from DIR (a `guard data build` output): records, shares of
unsafe, safety-adjacent benign (look-alike), response-classification, augmentation (`aug_*`) and repeated
(`repeat_of`) records, and the sources read. v4's teacher (its held-out numbers from next7's report, where it is the
baseline) is the reference; it saw 280 of the held-out look-alikes. Writes STEM.json, STEM.md and STEM.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from guard.bench.schema import command, environment, write_result
from guard.errors import GuardError
from guard.train.data import load_jsonl, split_counts

RESULTS = Path(__file__).resolve().parent / "results"


def make_up(data: Path) -> dict:
    path = data / "train.jsonl"
    rows = load_jsonl(path)
    c = split_counts(rows)
    share = lambda k: round(k / c["n"], 4)  # noqa: E731
    return {"records": c["n"], "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "unsafe": share(c["unsafe"]), "look_alike": share(c["adjacent"]), "response": share(c["response"]),
            "augmented": share(sum(r["source"].startswith("aug_") for r in rows)),
            "repeated": share(sum("repeat_of" in r for r in rows)),
            "sources": len({r["source"] for r in rows if not r["source"].startswith("aug_")})}


def heldout(name: str) -> tuple[dict, dict | None]:
    """The teacher's held-out scores from its committed report, and the baseline's (v4's teacher) if it has one."""
    path = RESULTS / f"guard_mini_{name}_teacher_heldout.json"
    if not path.is_file():
        raise SystemExit(f"teacher_ablation: {path} not found: read {name}'s teacher first (models/guard-mini/evaluate.py)")
    models = json.loads(path.read_text())["models"]
    pick = lambda m: {k: m[k] for k in ("recall_at_fpr10", "auprc", "recall", "fpr_adjacent", "hazard_exact")}  # noqa: E731
    mine = [m for k, m in models.items() if k.endswith(f"teacher-{name}")]
    if len(mine) != 1:
        raise SystemExit(f"teacher_ablation: {path} has no single 'teacher-{name}' model")
    base = [m for k, m in models.items() if k.endswith("teacher-baseline")]
    return pick(mine[0]), pick(base[0]) if base else None


def to_markdown(doc: dict) -> str:
    lines = ["# Rank-8 teachers (v4's recipe) on different training files: held-out ranking", "",
             "Held-out sources (1,423: harmfulq, trustllm_misuse unsafe; coconot_contrast look-alikes), eager, "
             "uncalibrated, each teacher read once. Shares are of the train split.", "",
             "| teacher | records | sources | unsafe | look-alike | response | augmented | repeated | recall at FPR 0.10 | AUPRC | recall / look-alike FPR at p 0.5 | hazard exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        d, h = r["data"], r["heldout"]
        lines.append(f"| {r['name']} | {d['records']:,} | {d['sources']} | {d['unsafe']:.3f} | {d['look_alike']:.3f} | "
                     f"{d['response']:.3f} | {d['augmented']:.3f} | {d['repeated']:.3f} | **{h['recall_at_fpr10']:.3f}** | "
                     f"{h['auprc']:.3f} | {h['recall']:.3f} / {h['fpr_adjacent']:.3f} | {h['hazard_exact']:.3f} |")
    if (b := doc.get("v4_teacher")) is not None:
        lines.append(f"| v4's teacher (saw 280 held-out look-alikes) | | | | | | | | {b['recall_at_fpr10']:.3f} | {b['auprc']:.3f} | "
                     f"{b['recall']:.3f} / {b['fpr_adjacent']:.3f} | {b['hazard_exact']:.3f} |")
    lines += ["", "Train files (sha256 of train.jsonl):", ""]
    lines += [f"- {r['name']}: `{r['dir']}` `{r['data']['sha256'][:16]}...`" for r in doc["runs"]]
    lines += ["", f"Command: `{doc['command']}`", "", f"Environment: {json.dumps(doc['environment'])}", ""]
    return "\n".join(lines)


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in doc["runs"]:
        x, y = r["data"]["look_alike"], r["heldout"]["recall_at_fpr10"]
        aug = r["data"]["augmented"] > 0
        ax.scatter([x], [y], marker="o" if aug else "s", color="tab:red" if aug else "tab:blue", s=40)
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    if (b := doc.get("v4_teacher")) is not None:
        ax.axhline(b["recall_at_fpr10"], color="grey", ls=":", lw=1, label="v4's teacher (saw held-out look-alikes)")
    ax.axhline(0.85, color="black", ls="--", lw=1, label="issue 18 target (recall 0.85 at FPR 0.10)")
    ax.scatter([], [], marker="o", color="tab:red", label="with augmentations")
    ax.scatter([], [], marker="s", color="tab:blue", label="without")
    xs = [r["data"]["look_alike"] for r in doc["runs"]]
    ys = [r["heldout"]["recall_at_fpr10"] for r in doc["runs"]]
    ax.set_xlim(min(xs + [0.1]) - 0.03, max(xs + [0.3]) + 0.05)
    ax.set_ylim(min(ys + [0.4]) - 0.05, 0.9)
    ax.set_xlabel("safety-adjacent benign share of the train split")
    ax.set_ylabel("held-out recall at FPR 0.10")
    ax.set_title("Rank-8 teachers, v4's recipe: held-out ranking", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=DIR",
                    help="a teacher (models/guard-mini/NAME) and the data build it trained on (repeatable, in table order)")
    ap.add_argument("--out", type=Path, default=RESULTS / "teacher_ablation")
    a = ap.parse_args()
    runs, base = [], None
    for spec in a.run:
        name, sep, d = spec.partition("=")
        if not sep or not name or not (Path(d) / "train.jsonl").is_file():
            raise SystemExit(f"teacher_ablation: --run {spec!r}: expected NAME=DIR with DIR/train.jsonl")
        h, b = heldout(name)
        base = base or b
        try:
            runs.append({"name": name, "dir": d, "data": make_up(Path(d)), "heldout": h})
        except GuardError as e:  # a malformed train.jsonl: one line, non-zero exit
            raise SystemExit(f"teacher_ablation: {e}") from None
    doc = {"runs": runs, "v4_teacher": base, "command": command(), "environment": environment()}
    write_result(a.out, doc, to_markdown(doc), chart)
    print(to_markdown(doc))


if __name__ == "__main__":
    main()
