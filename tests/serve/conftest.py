"""Live servers for the serve tests: uvicorn on 127.0.0.1 with an ephemeral port, in a thread of the test process
(thread workers) so torch is imported once; process workers spawn real child processes."""

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from guard.testing import make_checkpoint, make_scripted_checkpoint


@pytest.fixture(scope="session")
def unsafe_model(tmp_path_factory, tokenizer):
    """A real tiny Llama whose verdict is always 'unsafe\\nS1,S10' with p_unsafe = sigmoid(2) (scripted)."""
    t = tokenizer.tokens
    one, comma_s, ten = (tokenizer.single_id(x) for x in ("1", ",S", "10"))
    script = {t.blank: {t.safe: 1.0, t.unsafe: 3.0}, t.s: {one: 5.0}, one: {comma_s: 5.0}, comma_s: {ten: 5.0},
              ten: {t.eot: 5.0}}
    return make_scripted_checkpoint(tmp_path_factory.mktemp("serve") / "unsafe", script)


@pytest.fixture(scope="session")
def safe_model(tmp_path_factory, tokenizer):
    t = tokenizer.tokens
    return make_scripted_checkpoint(tmp_path_factory.mktemp("serve") / "safe", {t.blank: {t.safe: 4.0, t.unsafe: 1.0}})


@contextmanager
def live_server(config, pool=None):
    """Run ``create_app(config)`` under uvicorn in a thread; yield (base_url, app); shut down gracefully."""
    import uvicorn

    from guard.serve.app import create_app

    app = create_app(config, pool)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=20, timeout_keep_alive=5))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 300
    while not server.started:
        if not th.is_alive() or time.monotonic() > end:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield url, app, server
    finally:
        server.should_exit = True
        th.join(60)
        sock.close()


def config_for(model, **kw):
    from guard.serve.app import ServeConfig
    from guard.serve.workers import LoadSpec

    kw.setdefault("mode", "thread")  # in-process: torch is imported once (the eager test models release the GIL)
    return ServeConfig(spec=LoadSpec(model=str(model)), model_id=kw.pop("model_id", "guard-test"), **kw)


@pytest.fixture(scope="module")
def unsafe_server(unsafe_model):
    with live_server(config_for(unsafe_model, workers=2, max_body=1 << 20, body_timeout=2.0)) as (url, app, server):
        yield url


@pytest.fixture()
def client_for():
    clients = []

    def make(url, **kw):
        c = httpx.Client(base_url=url, timeout=30, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="session")
def serve_helpers():
    """(live_server, config_for) for tests that need their own server."""
    return live_server, config_for
