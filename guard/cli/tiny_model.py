"""guard tiny-model OUT: a tiny random Llama Guard-format checkpoint (Hugging Face directory) with the real Llama 3
tokenizer, for tests and trying the pipeline without downloading weights. Its verdicts are meaningless."""

HELP = "write a tiny random Llama Guard-format checkpoint with the real Llama 3 tokenizer"


def add_arguments(p):
    p.add_argument("out", help="directory to write (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--layers", type=int, default=None, help="decoder blocks (default: guard.testing.tiny's, 2; vision 3)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default: guard.testing.tiny's, 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vision", action="store_true", help="a tiny Llama Guard 3 Vision-format (mllama) checkpoint instead (docs/vision.md)")


def run(args) -> int:
    from guard.testing import make_checkpoint, tiny

    shape = {"n_layers": args.layers} if args.layers else {}
    if args.hidden:
        shape.update(dim=args.hidden, hidden_dim=2 * args.hidden)
    if args.vision:
        from guard.vision.testing import make_vision_checkpoint, tiny_text

        print(make_vision_checkpoint(args.out, tiny_text(**shape), seed=args.seed))
        return 0
    print(make_checkpoint(args.out, tiny(**shape), seed=args.seed))
    return 0
