"""guard prune MODEL --out DIR: remove decoder blocks and MLP neurons of a Hugging Face directory, by importance
measured on calibration texts or by an explicit list; writes a new directory with prune_record.json (replayable)."""

from __future__ import annotations

HELP = "remove decoder blocks and MLP neurons by measured importance (writes a new HF dir + prune_record.json)"

import json

from guard.cli.common import add_model_argument, model_of


def add_arguments(p) -> None:
    add_model_argument(p, positional=True, default="none: required")
    p.add_argument("--out", required=True, help="new output directory")
    p.add_argument("--drop-blocks", type=int, default=0, help="remove this many blocks, least important first")
    p.add_argument("--blocks", default=None, help="comma-separated block indices to remove (instead of --drop-blocks)")
    p.add_argument("--mlp-width", type=int, default=None, help="new MLP intermediate size")
    p.add_argument("--calib", default=None, help="calibration data: labelled JSONL (message texts) or a text file (one per line)")
    p.add_argument("--calib-n", type=int, default=64, help="calibration texts to use")


def run(args) -> int:
    from guard.errors import GuardError
    from guard.train.data import calibration_texts
    from guard.train.prune import PruneConfig, prune

    blocks = None
    if args.blocks:
        try:
            blocks = [int(b) for b in args.blocks.split(",")]
        except ValueError:
            raise GuardError(f"--blocks must be comma-separated integers, not {args.blocks!r}") from None
    cfg = PruneConfig(drop_blocks=args.drop_blocks, blocks=blocks, mlp_width=args.mlp_width,
                      calib=calibration_texts(args.calib, args.calib_n))
    rec = prune(model_of(args, required=True), args.out, cfg)
    print(json.dumps({k: rec[k] for k in ("removed_blocks", "blocks_after", "mlp_width_after", "parameters_after")}))
    return 0
