"""The HTTP application: OpenAI moderations and chat completions, llama-stack run-shield, streaming sessions.

``create_app(config)`` builds it; the pool of loaded guards starts in the lifespan (``guard serve`` runs it with
uvicorn). Every error is OpenAI-shaped JSON: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from guard.errors import GuardError
from guard.serve import schemas as S
from guard.serve.images import MAX_IMAGE_BYTES, image_bytes
from guard.serve.metrics import Metrics
from guard.serve.middleware import LimitsMiddleware, MetricsMiddleware, error_response
from guard.serve.openai_map import guard_text, llama_guard_block, moderation_result
from guard.serve.template import is_rendered, parse_rendered, policy_for
from guard.serve.workers import JobFailed, JobTimeout, LoadSpec, Pool, QueueFull, WorkerLost, wait

log = logging.getLogger("guard.serve")
CANNED_REFUSAL = "I can't answer that. Can I help with something else?"  # llama-stack's llama-guard shield


@dataclass
class ServeConfig:
    spec: LoadSpec = field(default_factory=LoadSpec)
    model_id: str = "guard-mini"
    workers: int = 1
    mode: str = "process"  # or "thread" (ExecuTorch holds the GIL while it runs: threads stall the event loop)
    max_queue: int = 64  # jobs waiting for a worker; more: 429
    timeout: float = 30.0  # seconds per request, queueing included: 504 after
    max_body: int = 1 << 20  # bytes: 413 above
    body_timeout: float = 10.0  # seconds to receive a whole body: 408 after (slowloris)
    max_input_chars: int = 32_000  # per text: 400 above
    max_inputs: int = 32  # strings in one moderation request / messages in one conversation
    max_image_bytes: int = MAX_IMAGE_BYTES  # decoded data: URL image in /v1/moderations (vision guards): 400 above
    max_sessions: int = 256
    session_idle_s: float = 300.0
    api_key: str | None = None
    env: dict = field(default_factory=dict)  # environment for worker processes (OMP_NUM_THREADS ...)


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param, self.headers = status, type_, code, param, headers


def create_app(config: ServeConfig, pool: Pool | None = None) -> FastAPI:
    metrics = Metrics()
    state = {"pool": pool, "sessions": {}, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app):
        p = state["pool"]
        if p is None:
            p = Pool(config.spec, config.workers, config.mode, config.max_queue, env=config.env)
            await asyncio.get_running_loop().run_in_executor(None, p.start)
            state["pool"] = p
        metrics.bind(p)
        state["loop"] = asyncio.get_running_loop()
        metrics.sessions.set_function(lambda: len(state["sessions"]))
        janitor = asyncio.create_task(expire_sessions())
        yield
        janitor.cancel()
        await asyncio.get_running_loop().run_in_executor(None, p.close)

    app = FastAPI(title="guard serve", version=_version(), lifespan=lifespan,
                  description="Llama Guard 3-style moderation: OpenAI /v1/moderations and chat completions, "
                              "llama-stack run-shield, streaming-moderation sessions. docs/serve.md")
    app.state.guard = state
    app.state.metrics = metrics

    # --- errors ----------------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return error_response(e.status, str(e), e.type, e.code, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            return error_response(400, f"the body is not valid JSON: {ctx.get('error', 'parse error')}", code="invalid_json")
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = first.get("msg", "invalid request")
        return error_response(400, f"{loc}: {msg}" if loc else msg, param=loc or None, code="invalid_value")

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                 413: "request_too_large"}
        detail = str(e.detail)
        if e.status_code == 400 and "error parsing the body" in detail:  # FastAPI: not UTF-8, or the client left
            detail = "the body could not be read as UTF-8 JSON"
        return error_response(e.status_code, detail, "invalid_request_error", codes.get(e.status_code),
                              headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request, e: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal server error", "server_error", "internal_error")

    # --- helpers ---------------------------------------------------------------------------------------------
    async def run_jobs(jobs, worker: int | None = None):
        p = state["pool"]
        try:
            futs = p.submit_many(jobs, config.timeout, worker)
        except QueueFull:
            metrics.rejected.labels("queue_full").inc()
            raise ApiError(429, "the server is busy: its queue is full; retry later", "rate_limit_error",
                           "rate_limit_exceeded", headers={"Retry-After": str(p.retry_after())}) from None
        except WorkerLost as e:
            raise ApiError(503, str(e), "server_error", "service_unavailable", headers={"Retry-After": "1"}) from None
        try:
            return await asyncio.gather(*(wait(f, config.timeout) for f in futs))
        except JobTimeout:
            for f in futs:
                f.cancel()
            metrics.rejected.labels("timeout").inc()
            raise ApiError(504, f"no verdict within {config.timeout:g} s", "server_error", "timeout") from None
        except WorkerLost as e:
            raise ApiError(503, f"{e}; it is being replaced, retry", "server_error", "worker_lost",
                           headers={"Retry-After": "2"}) from None
        except JobFailed as e:
            if e.kind == "invalid":
                raise ApiError(400, str(e), code="invalid_input") from None
            raise ApiError(500, "the guard failed on this input", "server_error", "internal_error") from None

    def check_text(text: str, where: str) -> str:
        if len(text) > config.max_input_chars:
            raise ApiError(400, f"{where}: {len(text)} characters is more than the {config.max_input_chars} allowed",
                           code="input_too_long", param=where)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"{where}: not valid UTF-8 (a lone surrogate)", code="invalid_value", param=where) from None
        if not text.strip():
            raise ApiError(400, f"{where}: empty text", code="invalid_value", param=where)
        return text

    def text_of(content, where: str) -> str:
        if isinstance(content, str):
            return check_text(content, where)
        return parts_of(content, where, images=False)[0]

    def parts_of(content: list, where: str, images: bool) -> tuple[str, bytes | None]:
        """Content parts -> (their text joined, the image's bytes or None). Images only where ``images``."""
        texts, image = [], None
        for i, part in enumerate(content):
            at = f"{where}[{i}]"
            if isinstance(part, S.ImageURLPart) or (isinstance(part, dict) and part.get("type") != "text"):
                image = image_of(part, at, images, image)
                continue
            t = part.text if isinstance(part, S.TextPart) else part.get("text")
            if not isinstance(t, str):
                raise ApiError(400, f"{at}: a text part needs a string 'text'", param=at)
            texts.append(t)
        if image is not None and not "".join(texts).strip():
            raise ApiError(400, f"{where}: an image needs a text part too (Llama Guard 3 Vision judges a user turn's "
                                "text with its image)", code="invalid_value", param=where)
        return check_text("\n".join(texts), where), image

    def image_of(part, at: str, images: bool, earlier: bytes | None) -> bytes:
        if not isinstance(part, S.ImageURLPart) or not state["pool"].vision:
            why = "the model is text-only" if not state["pool"].vision else "image_url parts go to /v1/moderations"
            raise ApiError(400, f"{at}: only text parts are accepted: {why}", code="unsupported_content", param=at)
        if not images:
            raise ApiError(400, f"{at}: image parts are accepted by /v1/moderations only", code="unsupported_content",
                           param=at)
        if earlier is not None:
            raise ApiError(400, f"{at}: at most one image per input (Llama Guard 3 Vision judges one image)",
                           code="invalid_value", param=at)
        try:
            return image_bytes(part.image_url.url, config.max_image_bytes)
        except ValueError as e:
            raise ApiError(400, f"{at}.image_url.url: {e}", code="invalid_image", param=f"{at}.image_url.url") from None

    def conversation(messages, where: str = "messages") -> tuple[list[dict], object]:
        """OpenAI/llama-stack messages -> (guard messages, policy or None). System messages are not classified."""
        if len(messages) > 4 * config.max_inputs:
            raise ApiError(400, f"{where}: at most {4 * config.max_inputs} messages", param=where)
        out = []
        for i, m in enumerate(messages):
            role = m.role
            if role in ("system", "developer"):
                continue
            if role not in ("user", "assistant"):
                raise ApiError(400, f"{where}[{i}]: role {role!r} is not classified; send user and assistant turns",
                               param=f"{where}[{i}].role")
            out.append({"role": role, "content": text_of(m.content, f"{where}[{i}].content")})
        if not out:
            raise ApiError(400, f"{where}: no user or assistant message to classify", param=where)
        if len(out) == 1 and out[0]["role"] == "user" and is_rendered(out[0]["content"]):
            try:
                msgs, cats = parse_rendered(out[0]["content"])
                return msgs, policy_for(cats)
            except (ValueError, GuardError) as e:  # no turn; a bad category list
                raise ApiError(400, f"{where}[0]: {e}", param=where) from None
        return out, None

    # --- endpoints -------------------------------------------------------------------------------------------
    errors = {k: {"model": S.ErrorResponse} for k in (400, 401, 408, 413, 429, 503, 504)}

    @app.post("/v1/moderations", response_model=S.ModerationResponse, responses=errors, tags=["OpenAI"])
    async def moderations(body: S.ModerationRequest):
        """OpenAI's moderation endpoint. A list of strings gives one result each; a list of parts gives one. An
        ``image_url`` part (a data: URL; vision guards only) is judged with the text parts."""
        inp, image = body.input, None
        if isinstance(inp, str):
            texts = [check_text(inp, "input")]
        elif not inp:
            raise ApiError(400, "input: empty list", param="input")
        elif isinstance(inp[0], str):
            if len(inp) > config.max_inputs:
                raise ApiError(400, f"input: at most {config.max_inputs} strings per request", param="input")
            texts = [check_text(t, f"input[{i}]") for i, t in enumerate(inp)]
        else:
            text, image = parts_of(inp, "input", images=True)
            texts = [text]
        job = {"image": image} if image is not None else {}
        verdicts = await run_jobs([("classify", {"messages": [{"role": "user", "content": t}], **job}) for t in texts])
        types = ("text", "image") if image is not None else ("text",)
        return {"id": "modr-" + secrets.token_hex(12), "model": config.model_id,
                "results": [moderation_result(v, types) for v in verdicts]}

    @app.post("/v1/safety/run-shield", response_model=S.RunShieldResponse, responses=errors, tags=["llama-stack"])
    async def run_shield(body: S.RunShieldRequest):
        """llama-stack's safety API: a violation (level error) when the last turn is unsafe, else null."""
        msgs, policy = conversation(body.messages)
        (v,) = await run_jobs([("classify", {"messages": msgs, "policy": policy})])
        if v["decision"] == "safe":
            return {"violation": None}
        codes = ",".join(h["code"] for h in v["categories"]) if v["decision"] == "unsafe" else "indeterminate"
        level = "error" if v["blocked"] else "warn"
        return {"violation": {"violation_level": level, "user_message": CANNED_REFUSAL if v["blocked"] else None,
                              "metadata": {"violation_type": codes, "llama_guard": llama_guard_block(v)}}}

    @app.post("/v1/chat/completions", response_model=S.ChatResponse, responses=errors, tags=["OpenAI"])
    async def chat(body: S.ChatRequest):
        """Guardrail frameworks' call: the answer is the guard's own text, 'safe' or 'unsafe\\nS1,S10'.

        A single user message holding a rendered Llama Guard prompt is read back into its conversation and
        categories. ``logprobs`` cover the first token, over the two verdict tokens (calibrated p_unsafe)."""
        msgs, policy = conversation(body.messages)
        (v,) = await run_jobs([("classify", {"messages": msgs, "policy": policy})])
        text = guard_text(v)
        lp = first_token_logprobs(v, text, body.top_logprobs or 0) if body.logprobs else None
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        completion = 1 + text.count(",") * 2 + (3 if "\n" in text else 0)
        usage = {"prompt_tokens": v["prompt_tokens"], "completion_tokens": completion,
                 "total_tokens": v["prompt_tokens"] + completion}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(sse(cid, created, text, lp, usage if include_usage else None),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return {"id": cid, "object": "chat.completion", "created": created, "model": config.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                             "logprobs": {"content": [lp]} if lp else None}],
                "usage": usage, "llama_guard": llama_guard_block(v)}

    def chunk(cid, created, delta, finish=None, logprobs=None, usage=None, choices=True):
        d = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": config.model_id,
             "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}] if choices else []}
        if usage is not None:
            d["usage"] = usage
        return f"data: {json.dumps(d)}\n\n"

    async def sse(cid, created, text, lp, usage):
        first, _, rest = text.partition("\n")
        yield chunk(cid, created, {"role": "assistant", "content": ""})
        yield chunk(cid, created, {"content": first}, logprobs={"content": [lp]} if lp else None)
        if rest:
            yield chunk(cid, created, {"content": "\n" + rest})
        yield chunk(cid, created, {}, finish="stop")
        if usage is not None:
            yield chunk(cid, created, None, usage=usage, choices=False)
        yield "data: [DONE]\n\n"

    # --- streaming moderation sessions -----------------------------------------------------------------------
    @app.post("/v1/moderations/streams", response_model=S.StreamState, status_code=201, responses=errors, tags=["streaming"])
    async def stream_open(body: S.StreamCreate):
        """Open a session for a response that is being generated; its cache lives in one worker."""
        msgs, _ = conversation(body.messages)
        sessions = state["sessions"]
        if len(sessions) >= config.max_sessions:
            raise ApiError(429, f"too many open stream sessions (max {config.max_sessions})", "rate_limit_error",
                           "too_many_sessions", headers={"Retry-After": "5"})
        counts = [0] * state["pool"].n
        for s in sessions.values():
            counts[s["worker"]] += 1
        worker = counts.index(min(counts))
        sid = "modstream-" + secrets.token_hex(12)
        await run_jobs([("stream_open", {"id": sid, "messages": msgs, "check_every": body.check_every})], worker)
        sessions[sid] = {"worker": worker, "used": time.monotonic(), "lock": asyncio.Lock()}
        return {"id": sid, "final": False}

    async def session_op(sid: str, op: str, args: dict):
        s = state["sessions"].get(sid)
        if s is None:
            raise ApiError(404, f"no stream session {sid!r} (closed, expired or never opened)", code="not_found", param="id")
        async with s["lock"]:
            s["used"] = time.monotonic()
            try:
                (r,) = await run_jobs([(op, {"id": sid, **args})], s["worker"])
            except ApiError as e:
                if e.status in (400, 503, 504, 500):  # the session's stream is gone or unusable
                    state["sessions"].pop(sid, None)
                raise
        if op == "stream_close":
            state["sessions"].pop(sid, None)
        v = r["verdict"]
        return {"id": sid, "final": r["final"], "stats": r["stats"], "verdict": llama_guard_block(v) if v else None}

    @app.post("/v1/moderations/streams/{sid}/chunks", response_model=S.StreamState, responses=errors, tags=["streaming"])
    async def stream_feed(sid: str, body: S.StreamChunk):
        """Add generated text. ``verdict`` is set when a check ran; ``final`` once the stream is unsafe."""
        if len(body.text) > config.max_input_chars:
            raise ApiError(400, f"text: more than {config.max_input_chars} characters", param="text")
        return await session_op(sid, "stream_feed", {"text": body.text})

    @app.post("/v1/moderations/streams/{sid}/close", response_model=S.StreamState, responses=errors, tags=["streaming"])
    async def stream_close(sid: str):
        """The verdict for the whole response; the session ends."""
        return await session_op(sid, "stream_close", {})

    @app.delete("/v1/moderations/streams/{sid}", status_code=204, responses=errors, tags=["streaming"])
    async def stream_delete(sid: str):
        s = state["sessions"].pop(sid, None)
        if s is None:
            raise ApiError(404, f"no stream session {sid!r}", code="not_found", param="id")
        try:
            await run_jobs([("stream_drop", {"id": sid})], s["worker"])
        except ApiError:
            pass
        return Response(status_code=204)

    async def expire_sessions():
        while True:
            await asyncio.sleep(min(30.0, config.session_idle_s))
            now = time.monotonic()
            for sid, s in list(state["sessions"].items()):
                if now - s["used"] > config.session_idle_s and not s["lock"].locked():
                    state["sessions"].pop(sid, None)
                    try:
                        state["pool"].submit_many([("stream_drop", {"id": sid})], config.timeout, s["worker"])
                    except (QueueFull, WorkerLost):
                        pass

    # --- service ---------------------------------------------------------------------------------------------
    @app.get("/v1/models", tags=["OpenAI"])
    async def models():
        return {"object": "list", "data": [{"id": config.model_id, "object": "model",
                                            "created": int(state["started"]), "owned_by": "guard"}]}

    @app.get("/health", tags=["service"])
    async def health():
        p = state["pool"]
        return {"status": "ok", "model": config.model_id, "workers": p.n, "mode": p.mode, "queue_depth": p.depth,
                "in_flight": p.in_flight, "worker_restarts": p.restarts, "stream_sessions": len(state["sessions"])}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics_text():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(LimitsMiddleware, metrics=metrics, max_body=config.max_body,
                       body_timeout=config.body_timeout, api_key=config.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def first_token_logprobs(v: dict, text: str, top: int) -> dict:
    """The first token's logprob over {safe, unsafe}, from the calibrated p_unsafe (so it agrees with the text)."""
    p = min(max(float(v["p_unsafe"]), 0.0), 1.0)

    def lp(x):
        return math.log(x) if x > 0 else -9999.0

    cands = sorted([("safe", lp(1 - p)), ("unsafe", lp(p))], key=lambda c: -c[1])
    token = text.split("\n")[0]
    chosen = dict(cands)[token]
    return {"token": token, "bytes": list(token.encode()), "logprob": chosen,
            "top_logprobs": [{"token": t, "bytes": list(t.encode()), "logprob": l} for t, l in cands[:top]]}


def _version() -> str:
    import guard

    return guard.__version__
