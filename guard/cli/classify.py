"""guard classify: one prompt, response or conversation, or a JSONL batch."""

from __future__ import annotations

HELP = "classify a prompt, a response or a conversation (exit 0 safe, 10 unsafe, 11 indeterminate)"

import json
import sys
from pathlib import Path

from guard.cli.common import (EXIT_CODES, add_model_arguments, add_policy_arguments, load_guard, policy_from_args,
                              read_stdin_text, text_arg)
from guard.format.prompt import conversation
from guard.errors import EXIT_INDETERMINATE, EXIT_PARTIAL, EXIT_SAFE, EXIT_UNSAFE, GuardError

EPILOG = EXIT_CODES


def add_arguments(p):
    p.add_argument("text", nargs="?", help="the user prompt (read from stdin when absent)")
    add_model_arguments(p)
    p.add_argument("--response", metavar="TEXT", help="the agent's reply to classify (response classification)")
    p.add_argument("--image", metavar="PATH", help="an image in the user turn (needs a Llama Guard 3 Vision model; docs/vision.md)")
    p.add_argument("--conversation", metavar="FILE", help='multi-turn JSON: [{"role": "user"|"assistant", "content": ...}, ...]')
    p.add_argument("--jsonl", metavar="IN", help="batch input, one JSON object per line: {id, prompt[, response]} or {id, messages}")
    p.add_argument("--out", metavar="OUT", help="batch output JSONL (appended; ids already there are skipped)")
    p.add_argument("--max-line-bytes", type=int, default=1 << 20, help="longest accepted JSONL line (default 1 MiB)")
    p.add_argument("--allow-any-path", action="store_true",
                   help="batch: let a line's 'image' name any file (default: only inside the JSONL file's folder)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="with --jsonl: classify on a Ray cluster with Ray Data, one guard per actor (no ADDRESS: a local one; docs/serve.md)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.add_argument("--stream", action="store_true", help="read the response from stdin as it arrives; print a verdict at each check")
    p.add_argument("--check-every", type=int, default=16, metavar="TOKENS", help="with --stream: check every N response tokens (default 16)")
    p.add_argument("--check-every-s", type=float, metavar="SECONDS", help="with --stream: also check when this much time has passed")
    add_policy_arguments(p)


def make_guard(args):
    guard = load_guard(args)
    if getattr(args, "image", None) and not guard.vision:
        raise GuardError(f"--image needs a Llama Guard 3 Vision model; {guard.source.path} is text-only")
    return guard


def _request(args):
    if args.conversation:
        if args.text is not None or args.response is not None:
            raise GuardError("--conversation takes the whole conversation; drop the text and --response")
        try:
            data = json.loads(Path(args.conversation).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise GuardError(f"conversation file not found: {args.conversation}") from None
        except IsADirectoryError:
            raise GuardError(f"--conversation {args.conversation} is a directory; give a JSON file") from None
        except OSError as e:
            raise GuardError(f"cannot read --conversation {args.conversation}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise GuardError(f"{args.conversation} is not valid UTF-8") from None
        except RecursionError:
            raise GuardError(f"{args.conversation} is nested too deeply") from None
        except json.JSONDecodeError as e:
            raise GuardError(f"{args.conversation} is not valid JSON: {e}") from None
        conversation(data)  # its shape is checked before the model loads
        return data, None
    text = text_arg(args.text, "the prompt") if args.text is not None else read_stdin_text()
    if not text.strip():
        raise GuardError("empty text: nothing to classify")
    response = text_arg(args.response, "--response") if args.response is not None else None
    if response is not None and not response.strip():
        raise GuardError("empty --response: nothing to classify")
    return text, response


def run(args) -> int:
    if not 0.0 <= args.threshold <= 1.0:
        raise GuardError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.jsonl or args.out:
        if not (args.jsonl and args.out):
            raise GuardError("batch mode needs both --jsonl IN and --out OUT")
        if args.text is not None or args.response is not None or args.conversation or args.image:
            raise GuardError("--jsonl cannot be combined with a text, --response, --conversation or --image (give each line an 'image')")
        from guard.runtime.batch import BatchOutput, check_paths, run_batch

        if args.max_line_bytes < 1:
            raise GuardError(f"--max-line-bytes must be at least 1, got {args.max_line_bytes}")
        check_paths(args.jsonl, args.out)  # before the model loads
        if args.ray:
            c = run_ray_batch(args)
        else:
            with BatchOutput(args.out) as out:  # locked (one run per OUT), before the model loads too
                guard = make_guard(args)
                c = run_batch(guard, args.jsonl, out, args.max_line_bytes, progress=sys.stderr.isatty(),
                              allow_any_path=args.allow_any_path)
        print(f"done: {c['safe']} safe, {c['unsafe']} unsafe, {c['indeterminate']} indeterminate, "
              f"{c['errors']} bad lines skipped, {c['skipped_done']} already in {args.out}")
        return EXIT_PARTIAL if c["errors"] else EXIT_SAFE
    if args.stream:
        if args.image:
            raise GuardError("--stream does not take --image yet; classify the finished response with --image --response")
        return run_stream(args)
    content, response = _request(args)
    guard = make_guard(args)
    v = guard.classify(content, response, image=args.image) if args.image else guard.classify(content, response)
    print(json.dumps(v.to_dict(), ensure_ascii=False) if args.json else v.summary())
    return exit_code(v)


def run_ray_batch(args) -> dict:
    from guard.serve.raybatch import run_ray
    from guard.serve.workers import LoadSpec

    spec = LoadSpec(model=args.model, pte=args.pte, dtype=args.dtype, threshold=args.threshold,
                    block_indeterminate=args.indeterminate == "block", calibrated=not args.uncalibrated,
                    policy=policy_from_args(args), check_tokenizer=not args.trust_tokenizer)
    return run_ray(args.jsonl, args.out, spec, address=args.ray, max_line_bytes=args.max_line_bytes)


def run_stream(args) -> int:
    """Moderate a response streamed on stdin, e.g. `llm-generate ... | guard classify --stream "the prompt"`."""

    if args.response is not None:
        raise GuardError("--stream reads the response from stdin; drop --response")
    if args.conversation:
        conv, _ = _request(args)
    elif args.text is not None and args.text.strip():
        conv = text_arg(args.text, "the prompt")
    else:
        raise GuardError("--stream needs the prompt as an argument (or --conversation); the response comes on stdin")
    guard = make_guard(args)
    stream = guard.moderate_stream(conv, check_every=args.check_every, check_every_s=args.check_every_s)

    def show(v, final=False):
        d = v.to_dict()
        d.update(final=final, response_chars=len(stream.text))
        print(json.dumps(d, ensure_ascii=False) if args.json else ("final " if final else "check ") + v.summary(), flush=True)

    while True:
        data = sys.stdin.buffer.read1(4096)  # what has arrived, up to 4 KiB: it does not wait for a full block
        if not data:
            break
        v = stream.feed(data)
        if v is not None:
            show(v, final=stream.final)
            if stream.final:
                break
    if not stream.final:
        show(stream.close(), final=True)
    return exit_code(stream.verdict)


def exit_code(v) -> int:
    if v.decision == "indeterminate":
        return EXIT_INDETERMINATE if v.blocked else EXIT_SAFE
    return EXIT_UNSAFE if v.decision == "unsafe" else EXIT_SAFE
