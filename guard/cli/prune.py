"""`guard prune SRC --out DIR`: remove decoder blocks and MLP neurons (by measured importance or an explicit list)."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    p.add_argument("model", help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="new output directory")
    p.add_argument("--drop-blocks", type=int, default=0, help="remove this many blocks, least important first")
    p.add_argument("--blocks", default=None, help="comma-separated block indices to remove (instead of --drop-blocks)")
    p.add_argument("--mlp-width", type=int, default=None, help="new MLP intermediate size")
    p.add_argument("--calib", default=None, help="calibration data: labelled JSONL (message texts) or a text file (one per line)")
    p.add_argument("--calib-n", type=int, default=64, help="calibration texts to use")


def calib_texts(path: str | None, n: int) -> list[str]:
    if path is None:
        return []
    from guard.errors import GuardError

    try:
        lines = [line for line in open(path, encoding="utf-8") if line.strip()]
    except OSError as e:
        raise GuardError(f"cannot read calibration file {path}: {e.strerror}") from None
    texts = []
    for line in lines[:n]:
        try:
            rec = json.loads(line)
            texts.append("\n\n".join(m["content"] for m in rec["messages"]) if isinstance(rec, dict) and "messages" in rec else line)
        except json.JSONDecodeError:
            texts.append(line.strip())
    if not texts:
        raise GuardError(f"calibration file {path} is empty")
    return texts


def run(args) -> int:
    from guard.errors import GuardError
    from guard.train.prune import PruneConfig, prune

    blocks = None
    if args.blocks:
        try:
            blocks = [int(b) for b in args.blocks.split(",")]
        except ValueError:
            raise GuardError(f"--blocks must be comma-separated integers, not {args.blocks!r}") from None
    cfg = PruneConfig(drop_blocks=args.drop_blocks, blocks=blocks, mlp_width=args.mlp_width,
                      calib=calib_texts(args.calib, args.calib_n))
    rec = prune(args.model, args.out, cfg)
    print(json.dumps({k: rec[k] for k in ("removed_blocks", "blocks_after", "mlp_width_after", "parameters_after")}))
    return 0
