"""guard export MODEL --out DIR: a Hugging Face Llama Guard directory (text or vision) -> DIR/model.pte with
tokenizer.json beside it, for the ExecuTorch runtime with XNNPACK; optional INT4 (8da4w) and output-vocabulary pruning."""

from __future__ import annotations

HELP = "export a Hugging Face Llama Guard directory to an ExecuTorch model.pte (XNNPACK, optional INT4)"

from guard.cli.common import add_model_argument, model_of


def add_arguments(p):
    add_model_argument(p, positional=True, default="none: a Hugging Face Llama Guard directory is required")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory: model.pte and tokenizer.json are written there")
    p.add_argument("--quant", choices=["none", "8da4w", "8da8w"], default="none",
                   help="none (fp32); 8da4w: INT4 weights in groups of --group-size; 8da8w: int8 weights per output channel; "
                        "both with int8 dynamic activations and a 4-bit embedding")
    p.add_argument("--group-size", type=int, default=256, help="INT4 weight group size (default 256, as Llama Guard 3-1B-INT4)")
    p.add_argument("--embedding-group-size", type=int, default=32, metavar="N",
                   help="4-bit embedding group size (default 32; 256 saves 14 MB of fp16 scales at the 1B shape, "
                        "docs/export.md)")
    p.add_argument("--prune-vocab", action="store_true", help="keep only the tokens the guard emits in the output layer")
    p.add_argument("--max-seq-len", type=int, default=1024, help="longest conversation plus verdict, in tokens (default 1024)")
    p.add_argument("--chunk", type=int, default=128, help="largest static prefill chunk, method `prefill` (default 128)")
    p.add_argument("--chunks", default="32,8", metavar="N,N",
                   help="smaller static prefill chunks, methods prefill_<n> (default 32,8; '' for none); the runtime "
                        "splits each prefill into the sizes that waste least")
    p.add_argument("--attention-span", type=int, default=64, metavar="N",
                   help="attention reads only the cache slots up to each step's end, rounded up to a multiple of N "
                        "(default 64; 0 attends to the whole cache, as files before it did)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes lowering the methods side by side (default 0: one per core, at most one per method)")
    p.add_argument("--quant-vision", action="store_true", help="vision (mllama) models: also 8da4w the vision encoder's linears")


def run(args) -> int:
    import logging
    import time

    from guard.errors import GuardError

    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    logging.basicConfig(level=logging.INFO, format="guard: %(message)s")
    logging.getLogger("guard.export").setLevel(logging.INFO)
    try:
        chunks = tuple(int(c) for c in args.chunks.split(",") if c.strip())
    except ValueError:
        raise GuardError(f"--chunks must be comma-separated integers, not {args.chunks!r}") from None
    cfg = ExportConfig(max_seq_len=args.max_seq_len, chunk=args.chunk, chunks=chunks, prune_vocab=args.prune_vocab, workers=args.workers,
                       attention_span=args.attention_span,
                       quant=QuantConfig(args.quant, group_size=args.group_size,
                                         embedding_group_size=args.embedding_group_size))
    t0 = time.perf_counter()
    from guard.model.checkpoint import model_type

    model = model_of(args, required=True)
    if model_type(model) == "mllama":  # Llama Guard 3 Vision (mllama): vision_encoder + prefill + decode, docs/vision.md
        from guard.vision.export import export_vision_model

        logging.getLogger("guard.vision.export").setLevel(logging.INFO)
        path = export_vision_model(model, args.out, cfg, vision_quant=args.quant_vision)
    elif args.quant_vision:
        raise GuardError(f"--quant-vision is for vision (mllama) models; {model} is text-only")
    else:
        path = export_model(model, args.out, cfg)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.quant}, {time.perf_counter() - t0:.0f} s)")
    return 0
