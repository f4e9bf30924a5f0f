"""What several commands share: the model argument (one form everywhere), policy and scoring options, loading
the guard they describe, and reading text from argv/stdin. No heavy imports at module level."""

from __future__ import annotations

import sys

from guard.errors import GuardError

EXIT_CODES = """exit codes: 0 safe (or batch finished), 10 unsafe, 11 indeterminate, 2 bad input or usage,
3 batch finished with skipped lines, 1 internal error. Set GUARD_DEBUG=1 for tracebacks."""
ERRORS = "exit codes: 0 done, 2 bad input or usage, 1 internal error. Set GUARD_DEBUG=1 for tracebacks."
MODEL_HELP = "a Hugging Face directory or an exported .pte (tokenizer.json beside it)"


def add_model_argument(p, positional: bool = False, default: str = "the default model (guard-mini)") -> None:
    """``--model PATH`` in every command (``--pte`` is an alias); commands whose first argument was the model also
    take it positionally. A directory runs eagerly, a file as an ExecuTorch program."""
    if positional:
        p.add_argument("model_arg", nargs="?", metavar="MODEL", help=f"{MODEL_HELP} (or --model); default: {default}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="PATH", help=f"{MODEL_HELP}; default: {default}")
    src.add_argument("--pte", metavar="FILE", help="the same as --model FILE (kept for old command lines)")


def add_dtype_argument(p) -> None:
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="eager backend precision (default fp32)")


def add_model_arguments(p, positional: bool = False) -> None:
    """The model, the eager backend's precision and --trust-tokenizer."""
    add_model_argument(p, positional)
    add_dtype_argument(p)
    p.add_argument("--trust-tokenizer", action="store_true",
                   help="accept a tokenizer.json beside the .pte that differs from the one recorded at export")


def model_of(args, required: bool = False) -> str | None:
    """The model named positionally, by --model or by --pte (one of them)."""
    named = [m for m in (getattr(args, "model_arg", None), args.model, getattr(args, "pte", None)) if m is not None]
    if len(set(named)) > 1:
        raise GuardError(f"two models given ({named[0]} and {named[1]}); give one")
    model = named[0] if named else None
    if required and model is None:
        raise GuardError("give the model: MODEL or --model PATH (a Hugging Face directory or a .pte)")
    return model


def add_policy_arguments(p, scoring: bool = True) -> None:
    p.add_argument("--categories", metavar="SPEC", help="comma list of codes (S1,S10,S14) or a JSON file {code: description} given as @FILE, FILE.json or DIR/FILE; default S1-S13")
    p.add_argument("--exclude", metavar="CODES", help="comma list of codes to leave out, e.g. S6,S7")
    p.add_argument("--renumber", action="store_true", help="show kept categories as S1..Sn (llama-recipes style); verdicts keep stable codes")
    if not scoring:
        return
    p.add_argument("--threshold", type=float, default=0.5, help="p_unsafe at or above this is unsafe (default 0.5)")
    p.add_argument("--indeterminate", choices=["block", "pass"], default="block", help="how an unparseable verdict counts (default block)")
    p.add_argument("--segment-checks", type=int, default=None, metavar="N",
                   help="a prompt not judged unsafe whole is also judged cut at up to N of its sentence or line ends "
                        "(default 4; 0: off), so a harmful request followed by other text is caught")
    p.add_argument("--uncalibrated", action="store_true",
                   help="score with the model's own softmax even when a calibration.json (guard calibrate) is beside the model")


def policy_from_args(args):
    from guard.format.categories import Policy, load_categories, parse_codes

    cats = load_categories(args.categories) if args.categories is not None else None  # "" is an error, not the default
    return Policy(**({"categories": cats} if cats else {}),
                  excluded=tuple(parse_codes(args.exclude, [c.code for c in cats] if cats else None) if args.exclude is not None else ()),
                  renumber=args.renumber)


def load_guard(args, model: str | None = None, calibrated: bool | None = None, announce: bool = True):
    """guard.load with the command's options; the default model is announced on stderr."""
    from guard.runtime.load import load
    from guard.runtime.pte import threads_from_env

    policy = policy_from_args(args)
    threads_from_env()  # a bad GUARD_THREADS is bad input, found before anything loads
    g = load(model if model is not None else model_of(args), dtype=getattr(args, "dtype", "fp32"), policy=policy,
             threshold=getattr(args, "threshold", 0.5), block_indeterminate=getattr(args, "indeterminate", "block") == "block",
             calibrated=not getattr(args, "uncalibrated", False) if calibrated is None else calibrated,
             check_tokenizer=not getattr(args, "trust_tokenizer", False), segment_checks=getattr(args, "segment_checks", None))
    if announce and g.source.default:
        print(f"guard: using the default model: {g.source.description}", file=sys.stderr)
    return g


def command_line(name: str) -> str:
    """The command as typed, for reports."""
    return f"guard {name} " + " ".join(sys.argv[2:] if sys.argv[1:2] == [name] else sys.argv[1:])


def text_arg(value: str, what: str) -> str:
    """argv arrives surrogate-escaped; invalid UTF-8 must be refused, not mangled."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GuardError(f"{what} is not valid UTF-8") from None
    return value


def read_stdin_text() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GuardError(f"standard input is not valid UTF-8 (byte {e.start})") from None
