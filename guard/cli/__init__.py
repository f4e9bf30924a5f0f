"""`guard` command line: a thin argparse layer over the library. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import os
import sys

from guard.errors import EXIT_ERROR, EXIT_INTERNAL, GuardError, GuardWarning

# each command is a module guard/cli/<name>.py ("-" as "_"): HELP (its line in `guard --help`), add_arguments(parser)
# and run(args) -> exit code
COMMANDS = ("classify", "bench", "demo", "export", "data", "eval", "calibrate", "prune", "distill", "mini", "serve",
            "tiny-model")


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
    for name in COMMANDS:
        mod = importlib.import_module(f"guard.cli.{name.replace('-', '_')}")
        sp = sub.add_parser(name, help=mod.HELP, description=mod.__doc__.strip() if mod.__doc__ else mod.HELP,
                            epilog=getattr(mod, "EPILOG", ERRORS), formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def quiet_libraries() -> None:
    """torchao, torch and ExecuTorch warnings that are noise for CLI users (GUARD_DEBUG=1 shows them)."""
    import warnings

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
