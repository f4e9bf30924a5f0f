"""guard serve: an HTTP moderation server (OpenAI moderations and chat completions, llama-stack run-shield,
streaming-moderation sessions, Prometheus metrics). docs/serve.md"""

from __future__ import annotations

HELP = "serve moderation over HTTP: OpenAI /v1/moderations and chat completions, llama-stack run-shield (docs/serve.md)"

import os
import sys

from guard.errors import GuardError


def add_arguments(p):
    from guard.cli.common import add_model_arguments, add_policy_arguments

    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--workers", type=int, default=1, help="loaded guards, each with its own runner and KV cache (default 1)")
    p.add_argument("--worker-mode", choices=["thread", "process"], default="process",
                   help="workers as child processes (default) or threads of this process: ExecuTorch holds the GIL while it "
                        "runs, so thread workers stall the HTTP event loop (docs/serve.md has measurements)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("GUARD_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $GUARD_API_KEY; none: no authentication)")
    p.add_argument("--model-id", help="model name in responses and /v1/models (default: guard-mini or the model's file name)")
    p.add_argument("--max-queue", type=int, default=64, help="jobs waiting for a worker before 429 (default 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request, queueing included, before 504 (default 30)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes, 413 above (default 1 MiB)")
    p.add_argument("--body-timeout", type=float, default=10.0, help="seconds to receive a whole body, 408 after (default 10)")
    p.add_argument("--max-input-chars", type=int, default=32_000, help="longest text per input, 400 above (default 32000)")
    p.add_argument("--max-inputs", type=int, default=32, help="most strings in one moderation request (default 32)")
    p.add_argument("--max-image-bytes", type=int, default=4 << 20,
                   help="largest image (a data: URL in /v1/moderations, vision guards only) after base64 decoding, "
                        "400 above (default 4 MiB; --max-body applies first)")
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="on SIGTERM/Ctrl-C, seconds for requests in flight to finish (default 30)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_policy_arguments(p)


def config_from_args(args):
    from pathlib import Path

    from guard.cli.common import policy_from_args
    from guard.serve.app import ServeConfig
    from guard.serve.workers import LoadSpec

    if args.workers < 1:
        raise GuardError(f"--workers must be at least 1, got {args.workers}")
    for name in ("max_queue", "max_body", "max_input_chars", "max_inputs", "max_image_bytes"):
        if getattr(args, name) < 1:
            raise GuardError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            raise GuardError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if not 0.0 <= args.threshold <= 1.0:
        raise GuardError(f"--threshold must be in [0, 1], got {args.threshold}")
    model, pte, model_id = args.model, args.pte, args.model_id
    if model is None and pte is None:
        from guard.runtime.load import resolve

        source = resolve()
        model, pte = (None, str(source.path)) if source.kind == "pte" else (str(source.path), None)
        print(f"guard: using the default model: {source.description}", file=sys.stderr)
        model_id = model_id or ("guard-mini" if source.kind == "pte" else source.path.name)
    for path in (model, pte):
        if path is not None and not Path(path).exists():
            raise GuardError(f"model not found: {path}")
    if model_id is None:
        path = Path(pte or model).resolve()
        model_id = path.parent.name if pte and path.stem == "model" else (path.stem if pte else path.name)
    spec = LoadSpec(model=model, pte=pte, dtype=args.dtype, threshold=args.threshold,
                    block_indeterminate=args.indeterminate == "block", calibrated=not args.uncalibrated,
                    policy=policy_from_args(args), check_tokenizer=not args.trust_tokenizer)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if args.worker_mode == "process" and args.workers > 1 and "GUARD_THREADS" not in os.environ:
        env["GUARD_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // args.workers))  # N processes share the cores
    return ServeConfig(spec=spec, model_id=model_id, workers=args.workers, mode=args.worker_mode,
                       max_queue=args.max_queue, timeout=args.timeout, max_body=args.max_body,
                       body_timeout=args.body_timeout, max_input_chars=args.max_input_chars, max_inputs=args.max_inputs,
                       max_image_bytes=args.max_image_bytes, api_key=args.api_key or None, env=env)


def exposure_warning(host: str, api_key: str | None) -> str | None:
    if host in ("127.0.0.1", "localhost", "::1") or api_key:
        return None
    return f"guard: WARNING: serving on {host} without --api-key: anyone who can reach this address can use it"


def run(args) -> int:
    import socket

    config = config_from_args(args)
    warning = exposure_warning(args.host, config.api_key)
    if warning:
        print(warning, file=sys.stderr)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as e:
        raise GuardError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    host, port = sock.getsockname()[:2]
    print(f"guard serve: loading {config.workers} {config.mode} worker(s) of {config.model_id}; "
          f"will listen on http://{host}:{port}", file=sys.stderr, flush=True)
    serve(config, sock, args.graceful_timeout, args.log_level)
    return 0


def serve(config, sock, graceful_timeout: float = 30.0, log_level: str = "info") -> None:
    import logging

    import uvicorn

    from guard.serve.app import create_app

    logging.basicConfig(level=getattr(logging, log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=graceful_timeout,
                                           access_log=False, server_header=False, timeout_keep_alive=15))
    server.run(sockets=[sock])
