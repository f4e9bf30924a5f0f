"""`guard distill STUDENT --teacher DIR --data train.jsonl --out DIR`: KL to the teacher over guard tokens + CE."""

from __future__ import annotations

HELP = "train a pruned student toward a teacher guard: KL over guard tokens + CE, optional QAT (8da4w or 8da8w), resumable"

import json


def add_arguments(p) -> None:
    p.add_argument("student", help="student Hugging Face directory (e.g. the output of guard prune)")
    p.add_argument("--teacher", help="teacher Hugging Face directory (same tokenizer); without it, plain fine-tuning (CE on labels)")
    p.add_argument("--data", required=True, help="labelled JSONL (docs/data.md)")
    p.add_argument("--split", default="train", help="split to train on (default train; 'all' for every record)")
    p.add_argument("--out", required=True, help="new output directory; checkpoints go to OUT.work and a rerun resumes")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--decay-from", type=int, default=None, metavar="STEP",
                   help="keep --lr until STEP, then decay it linearly to 0 at --steps (default: constant)")
    p.add_argument("--alpha", type=float, default=0.5, help="CE weight (1 - alpha on KL)")
    p.add_argument("--qat", type=int, default=None, metavar="GROUP", help="QAT with this INT4 weight group size")
    p.add_argument("--qat-scheme", choices=["8da4w", "8da8w"], default="8da4w",
                   help="with --qat: 8da4w (int4 weights in groups of GROUP) or 8da8w (int8 per channel; GROUP unused)")
    p.add_argument("--lora", type=int, default=None, metavar="R", help="train rank-R LoRA adapters instead of all weights (saved as adapter.safetensors)")
    p.add_argument("--init-adapter", metavar="FILE", help="continue from these LoRA adapters (an earlier run's "
                   "OUT/adapter.safetensors, same --lora and --qat); needs --lora")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 * R)")
    p.add_argument("--chatml", action="store_true", help="map the Llama 3 template tokens to ChatML (SmolLM2 models)")
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 (default bf16 autocast)")


def run(args) -> int:
    from guard.train.data import load_jsonl
    from guard.train.distill import DistillConfig, distill
    from guard.train.lora import LoraConfig
    from guard.train.loop import CHATML, TrainConfig

    records = load_jsonl(args.data, None if args.split == "all" else args.split)
    cfg = DistillConfig(TrainConfig(steps=args.steps, lr=args.lr, accum=args.accum, bf16=not args.no_bf16,
                                    decay_from=args.decay_from),
                        alpha=args.alpha if args.teacher else 1.0, qat_group_size=args.qat, qat_scheme=args.qat_scheme,
                        lora=LoraConfig(r=args.lora, alpha=args.lora_alpha or 2.0 * args.lora) if args.lora else None,
                        init_adapter=args.init_adapter)
    rec = distill(args.student, args.teacher, records, args.out, cfg, CHATML if args.chatml else None)
    print(json.dumps(rec["summary"]))
    return 0
