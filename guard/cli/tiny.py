from guard.testing import TinyConfig


def add_arguments(p):
    p.add_argument("out", help="directory to write (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--layers", type=int, default=TinyConfig.num_hidden_layers)
    p.add_argument("--hidden", type=int, default=TinyConfig.hidden_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vision", action="store_true", help="a tiny Llama Guard 3 Vision-format (mllama) checkpoint instead (docs/vision.md)")


def run(args) -> int:
    from guard.testing import make_checkpoint

    if args.vision:
        from guard.vision.testing import TinyVisionConfig, make_vision_checkpoint

        print(make_vision_checkpoint(args.out, TinyVisionConfig(hidden_size=args.hidden, seed=args.seed)))
        return 0

    cfg = TinyConfig(num_hidden_layers=args.layers, hidden_size=args.hidden, intermediate_size=2 * args.hidden, seed=args.seed)
    print(make_checkpoint(args.out, cfg))
    return 0
