"""Hostile and unlucky clients: each gets a clean 4xx JSON error (or 429/503/504 under load and faults) and the
server keeps serving. Raw sockets where an HTTP client would refuse to misbehave."""

import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest


def raw(url, data: bytes, timeout=15.0, close_after_send=False):
    """Send bytes on a fresh connection; -> (status, json body or None). Bounded by ``timeout``.

    Sends in 64 KiB pieces and stops as soon as the server answers (it may refuse a body before it is all sent)."""
    import select

    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        for i in range(0, len(data), 1 << 16):
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(data[i:i + (1 << 16)])
            except (BrokenPipeError, ConnectionResetError):
                break
        if close_after_send:
            return None, None
        buf = b""
        while True:
            try:
                got = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not got:
                break
            buf += got
            head, _, body = buf.partition(b"\r\n\r\n")
            if b"content-length:" in head.lower():
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head else None
        return status, json.loads(body) if body.strip() else None
    finally:
        s.close()


def request(path: str, body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def assert_error(status, body, expected):
    assert status == expected, (status, body)
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    assert "Traceback" not in body["error"]["message"]


def assert_serving(url):
    r = httpx.post(url + "/v1/moderations", json={"input": "still there?"}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["flagged"] is True


CASES = [
    ("/v1/moderations", b'{"input": "x"', "malformed JSON"),
    ("/v1/moderations", b'{"input": 5}', "wrong type"),
    ("/v1/moderations", b'{"input": ["a", 3]}', "wrong type in a list"),
    ("/v1/moderations", b'{"input": "x", "foo": 1}', "unknown field"),
    ("/v1/moderations", b'{"input": "\xff\xfe caf\xe9"}', "invalid UTF-8"),
    ("/v1/moderations", b'{"input": "\\ud800"}', "lone surrogate"),
    ("/v1/moderations", b'{"input": ""}', "empty text"),
    ("/v1/moderations", b'{"input": []}', "empty list"),
    ("/v1/moderations", b'[]', "not an object"),
    ("/v1/moderations", b'{"input": "' + b"a" * 40_000 + b'"}', "input too long"),
    ("/v1/moderations", json.dumps({"input": ["a"] * 33}).encode(), "too many inputs"),
    ("/v1/chat/completions", b'{"model": 1, "messages": []}', "chat: wrong types"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}', "n > 1"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "x", "x": 1}]}', "unknown message field"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "assistant", "content": "x"}]}', "conversation order"),
    ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}', "out of range"),
    ("/v1/safety/run-shield", b'{"shield_id": "s", "messages": [{"role": "user"}]}', "missing content"),
    ("/v1/moderations/streams/nope/chunks", b'{"text": "x"}', "unknown session"),
]


@pytest.mark.parametrize("path,body,why", CASES, ids=[c[2] for c in CASES])
def test_bad_requests_are_clean_4xx(unsafe_server, path, body, why):
    status, out = raw(unsafe_server, request(path, body))
    assert_error(status, out, 404 if "session" in why else 400)


def test_wrong_method_and_path(unsafe_server):
    r = httpx.get(unsafe_server + "/v1/moderations")
    assert_error(r.status_code, r.json(), 405)
    r = httpx.post(unsafe_server + "/v2/nothing", json={})
    assert_error(r.status_code, r.json(), 404)
    assert_serving(unsafe_server)


def test_body_size_limits(unsafe_server):
    ten_mb = b'{"input": "' + b"a" * (10 << 20) + b'"}'
    status, out = raw(unsafe_server, request("/v1/moderations", ten_mb))  # Content-Length says 10 MB: refused at once
    assert_error(status, out, 413)
    # no Content-Length (chunked): counted as it arrives
    chunk = b"a" * (256 << 10)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    head = b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, out = raw(unsafe_server, head + body)
    assert_error(status, out, 413)
    assert_serving(unsafe_server)


def test_slow_body_is_cut_off_and_others_are_served(unsafe_server):
    """Slowloris: a body that never finishes gets 408 after body_timeout (2 s here); meanwhile others are served."""
    u = urlparse(unsafe_server)
    socks = []
    for _ in range(3):
        s = socket.create_connection((u.hostname, u.port), timeout=20)
        s.sendall(b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp")
        socks.append(s)
    t0 = time.monotonic()
    assert_serving(unsafe_server)
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            got = s.recv(65536)
            if not got:
                break
            data += got
        s.close()
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert time.monotonic() - t0 < 20
    assert_serving(unsafe_server)


def test_client_disconnects(unsafe_server):
    body = b'{"input": "a text that is sent only halfway'
    for _ in range(3):
        raw(unsafe_server, request("/v1/moderations", body + b'"}')[:-30], close_after_send=True)  # mid-body
        raw(unsafe_server, request("/v1/moderations", b'{"input": "x"}'), close_after_send=True)  # before the answer
        raw(unsafe_server, request("/v1/chat/completions", b'{"model": "m", "stream": true, "messages": '
                                   b'[{"role": "user", "content": "x"}]}'), close_after_send=True)
    time.sleep(0.5)
    assert_serving(unsafe_server)
    assert httpx.get(unsafe_server + "/health").json()["status"] == "ok"


def test_full_queue_429_and_timeout_504(unsafe_model, serve_helpers):
    live_server, config_for = serve_helpers
    cfg = config_for(unsafe_model, workers=1, max_queue=2, timeout=3.0)
    cfg.spec.delay_s = 2.0  # every classification takes 2 s: one runs, two wait, the rest are refused
    with live_server(cfg) as (url, app, _):
        results = []

        def call():
            r = httpx.post(url + "/v1/moderations", json={"input": "x"}, timeout=30)
            results.append((r.status_code, r.headers.get("retry-after"), r.json()))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(s for s, _, _ in results)
        assert len(results) == 8 and set(statuses) <= {200, 429, 504}, statuses
        assert statuses.count(200) >= 1 and statuses.count(429) >= 4 and statuses.count(504) >= 1, statuses
        for status, retry, body in results:
            if status == 429:
                assert int(retry) >= 1 and body["error"]["code"] == "rate_limit_exceeded"
            if status == 504:
                assert body["error"]["code"] == "timeout"
        metrics = httpx.get(url + "/metrics").text
        assert 'guard_rejected_total{reason="queue_full"}' in metrics


@pytest.mark.slow  # spawns worker processes and kills one
def test_killed_worker_process_is_replaced(unsafe_model, serve_helpers):
    """kill -9 of a worker process: its request gets 503 (JSON, Retry-After), the worker is replaced, service goes on."""
    live_server, config_for = serve_helpers
    cfg = config_for(unsafe_model, workers=1, mode="process", timeout=120)
    cfg.spec.delay_s = 2.0
    with live_server(cfg) as (url, app, _):
        pool = app.state.guard["pool"]
        out = {}
        t = threading.Thread(target=lambda: out.update(r=httpx.post(url + "/v1/moderations", json={"input": "x"}, timeout=120)))
        t.start()
        end = time.monotonic() + 30
        while pool.in_flight == 0 and time.monotonic() < end:
            time.sleep(0.02)
        old = pool.kill_worker_process(0)
        t.join(120)
        r = out["r"]
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_lost" and int(r.headers["retry-after"]) >= 1
        ok = httpx.post(url + "/v1/moderations", json={"input": "x"}, timeout=300)  # waits for the replacement
        assert ok.status_code == 200 and ok.json()["results"][0]["flagged"]
        h = httpx.get(url + "/health").json()
        assert h["worker_restarts"] == 1 and pool.pids[0] not in (None, old)


def test_graceful_shutdown_finishes_requests_in_flight(safe_model, serve_helpers):
    live_server, config_for = serve_helpers
    cfg = config_for(safe_model, workers=1)
    cfg.spec.delay_s = 1.5
    with live_server(cfg) as (url, app, server):
        pool = app.state.guard["pool"]
        out = {}
        t = threading.Thread(target=lambda: out.update(r=httpx.post(url + "/v1/moderations", json={"input": "x"}, timeout=60)))
        t.start()
        while pool.in_flight == 0:
            time.sleep(0.02)
        server.should_exit = True  # what SIGTERM / Ctrl-C does
        t.join(60)
        assert out["r"].status_code == 200 and out["r"].json()["results"][0]["flagged"] is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=5)
