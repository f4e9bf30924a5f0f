"""Pure ASGI middleware: metrics, API key, body size and body read time. Errors are OpenAI-shaped JSON."""

from __future__ import annotations

import asyncio
import hmac
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


class BodyTooLarge(HTTPException):
    """An HTTPException, so the framework's body parsing passes it on instead of answering 400."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes", headers={"Connection": "close"})


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body did not arrive within {seconds:g} s", headers={"Connection": "close"})


class MetricsMiddleware:
    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def send_(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(name, scope.get("method", ""), str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


class LimitsMiddleware:
    """API key (Bearer, constant-time compare), body size (413) and whole-body read time (408, slowloris)."""

    OPEN_PATHS = ("/health",)

    def __init__(self, app, metrics, max_body: int, body_timeout: float, api_key: str | None):
        self.app, self.metrics = app, metrics
        self.max_body, self.body_timeout = max_body, body_timeout
        self.key = api_key.encode("utf-8") if api_key else None

    def _authorized(self, scope) -> bool:
        if self.key is None or scope["path"] in self.OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        got = headers.get(b"authorization", b"")
        token = got[7:] if got[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(token.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        reject = None
        if not self._authorized(scope):
            self.metrics.rejected.labels("auth").inc()
            reject = error_response(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error", "invalid_api_key")
        else:
            length = dict(scope.get("headers") or []).get(b"content-length")
            try:
                if length is not None and int(length) > self.max_body:
                    reject = self._too_large()
            except ValueError:
                reject = error_response(400, "bad Content-Length header")
        if reject is not None:
            return await reject(scope, receive, send)

        received, started = [0], [False]
        deadline = time.monotonic() + self.body_timeout
        body_done = [scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS")]

        async def receive_():
            if body_done[0]:
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), max(0.001, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.metrics.rejected.labels("body_timeout").inc()
                raise BodyTimeout(self.body_timeout) from None
            if msg["type"] == "http.request":
                received[0] += len(msg.get("body", b""))
                if received[0] > self.max_body:
                    self.metrics.rejected.labels("body_size").inc()
                    raise BodyTooLarge(self.max_body)
                if not msg.get("more_body", False):
                    body_done[0] = True
            return msg

        async def send_(msg):
            if msg["type"] == "http.response.start":
                started[0] = True
            await send(msg)

        try:
            await self.app(scope, receive_, send_)
        except (BodyTooLarge, BodyTimeout) as e:
            if started[0]:
                raise
            code = "request_too_large" if isinstance(e, BodyTooLarge) else "request_timeout"
            await error_response(e.status_code, e.detail, code=code, headers=e.headers)(scope, receive, send)

    def _too_large(self):
        self.metrics.rejected.labels("body_size").inc()
        return error_response(413, f"request body is larger than {self.max_body} bytes", code="request_too_large",
                              headers={"Connection": "close"})
