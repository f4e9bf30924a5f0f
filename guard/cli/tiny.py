"""guard tiny-model OUT: a tiny random Llama Guard-format checkpoint (Hugging Face directory) with the real Llama 3
tokenizer, for tests and trying the pipeline without downloading weights. Its verdicts are meaningless."""


def add_arguments(p):
    p.add_argument("out", help="directory to write (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--layers", type=int, default=None, help="decoder blocks (default: guard.testing.TinyConfig's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden size (default: guard.testing.TinyConfig's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vision", action="store_true", help="a tiny Llama Guard 3 Vision-format (mllama) checkpoint instead (docs/vision.md)")


def run(args) -> int:
    from guard.testing import TinyConfig, make_checkpoint

    hidden = args.hidden or TinyConfig.hidden_size
    if args.vision:
        from guard.vision.testing import TinyVisionConfig, make_vision_checkpoint

        print(make_vision_checkpoint(args.out, TinyVisionConfig(hidden_size=args.hidden or TinyVisionConfig.hidden_size, seed=args.seed)))
        return 0
    cfg = TinyConfig(num_hidden_layers=args.layers or TinyConfig.num_hidden_layers, hidden_size=hidden,
                     intermediate_size=2 * hidden, seed=args.seed)
    print(make_checkpoint(args.out, cfg))
    return 0
