"""`guard` command line: a thin argparse layer over the library. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import os
import sys

from guard.errors import EXIT_ERROR, EXIT_INTERNAL, GuardError

# name -> module under guard.cli; each module has add_arguments(parser) and run(args) -> exit code
COMMANDS = {
    "classify": ("classify", "classify a prompt, a response or a conversation (exit 0 safe, 10 unsafe, 11 indeterminate)"),
    "bench": ("bench", "measure load time, time to first token, prefill/decode tok/s and verdict latency"),
    "demo": ("demo", "the main job: classify sample prompts and responses with the default model and time it"),
    "export": ("export", "export a Hugging Face Llama Guard directory to an ExecuTorch model.pte (XNNPACK, optional INT4)"),
    "data": ("data", "build labelled train/dev/test JSONL from the public moderation datasets (docs/data.md)"),
    "eval": ("eval", "evaluate one or two models (dir or .pte) on labelled JSONL: P/R/F1/FPR/AUPRC, per category, agreement, latency"),
    "calibrate": ("calibrate", "fit p_unsafe's scale (Platt) on labelled dev data; writes calibration.json beside the model"),
    "prune": ("prune", "remove decoder blocks and MLP neurons by measured importance (writes a new HF dir + prune_record.json)"),
    "distill": ("distill", "train a pruned student toward a teacher guard: KL over guard tokens + CE, optional QAT 8da4w, resumable"),
    "mini": ("mini", "build guard-mini, the default model, from its committed artefacts (models/guard-mini/)"),
    "serve": ("serve", "serve moderation over HTTP: OpenAI /v1/moderations and chat completions, llama-stack run-shield (docs/serve.md)"),
    "tiny-model": ("tiny", "write a tiny random Llama Guard-format checkpoint with the real Llama 3 tokenizer"),
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors (unknown option, bad value) are bad input too: one line on stderr, exit 2, no usage dump."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"guard: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from guard import __version__
    from guard.cli.common import ERRORS, EXIT_CODES

    p = OneLineParser(prog="guard", description="On-device Llama Guard 3-style safety moderation.", epilog=EXIT_CODES)
    p.add_argument("--version", action="version", version=f"guard {__version__} (ondevice-llamaguard)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(f"guard.cli.{module}")
        sp = sub.add_parser(name, help=help_, description=mod.__doc__.strip() if mod.__doc__ else help_,
                            epilog=getattr(mod, "EPILOG", ERRORS), formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def quiet_libraries() -> None:
    """torchao, torch and ExecuTorch warnings that are noise for CLI users (GUARD_DEBUG=1 shows them)."""
    import warnings

    from guard.errors import GuardWarning
    from guard.logs import quiet_third_party

    quiet_third_party()
    shown = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, GuardWarning):
            print(f"guard: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        code = args._run(args)
    except GuardError as e:
        print(f"guard: error: {e}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("guard: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # the reader of stdout went away (`guard ... | head`): not a bug, and not worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        print("guard: error: standard output was closed (broken pipe)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("GUARD_DEBUG", "") not in ("", "0"):
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"guard: internal error: {type(e).__name__}: {msg} (GUARD_DEBUG=1 shows the traceback)", file=sys.stderr)
        code = EXIT_INTERNAL
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
