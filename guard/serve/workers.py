"""N workers, each with its own loaded guard (runner + KV cache), behind one bounded queue.

A worker is a thread. In ``thread`` mode it runs the guard itself; in ``process`` mode it proxies each job to
its own child process (spawned, so no torch state is forked), which holds the guard. A child that dies (kill -9,
a crash) fails its job with ``WorkerLost`` (HTTP 503) and is replaced; a child stuck past a job's deadline is
killed and replaced too. Jobs are plain picklable tuples: ``(op, args)``; see ``execute``.

Streaming sessions are pinned to one worker (their ``Stream`` and its cache live there); other jobs go to any
free worker. ``submit`` never blocks: when ``max_queue`` jobs are already waiting it raises ``QueueFull`` (429).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from guard.errors import GuardError

log = logging.getLogger("guard.serve")


class QueueFull(Exception):
    pass


class WorkerLost(Exception):
    """The worker process died while it held the job (HTTP 503)."""


class JobTimeout(Exception):
    pass


class JobFailed(Exception):
    """The guard refused the input (GuardError: HTTP 400) or failed (``internal``: HTTP 500)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class LoadSpec:
    """How each worker loads its guard: arguments of ``guard.load`` plus the policy (picklable)."""

    model: str | None = None
    pte: str | None = None
    dtype: str = "fp32"
    threshold: float = 0.5
    block_indeterminate: bool = True
    calibrated: bool = True
    policy: object = None  # guard.Policy or None
    check_tokenizer: bool = True  # False: --trust-tokenizer
    delay_s: float = 0.0  # fault tests only: each classify sleeps this long first (a slow request to kill or wait for)


def load_guard(spec: LoadSpec):
    import guard

    return guard.load(model=spec.model, pte=spec.pte, dtype=spec.dtype, policy=spec.policy, threshold=spec.threshold,
                      block_indeterminate=spec.block_indeterminate, calibrated=spec.calibrated,
                      check_tokenizer=spec.check_tokenizer)


def execute(g, sessions: dict, op: str, args: dict, delay_s: float = 0.0):
    """Run one job on a loaded guard. Sessions: id -> Stream, owned by this worker."""
    if op == "classify":
        if delay_s:
            time.sleep(delay_s)
        policy, image = args.get("policy"), args.get("image")
        if image is not None and not g.vision:
            raise GuardError("an image needs a vision guard (Llama Guard 3 Vision); this model is text-only")
        kw = {"image": image} if image is not None else {}
        saved, g.policy = g.policy, policy or g.policy  # policy: a client-rendered template with its own categories
        try:
            return g.classify(args["messages"], **kw).to_dict()
        finally:
            g.policy = saved
    if op == "stream_open":
        sessions[args["id"]] = g.moderate_stream(args["messages"], check_every=args.get("check_every", 16))
        return {}
    if op in ("stream_feed", "stream_close"):
        s = sessions.get(args["id"])
        if s is None:
            raise GuardError("stream session lost (its worker was restarted)")
        try:
            v = s.feed(args["text"]) if op == "stream_feed" else s.close()
        except Exception:
            sessions.pop(args["id"], None)
            raise
        if op == "stream_close":
            sessions.pop(args["id"], None)
        st = s.stats
        return {"verdict": v.to_dict() if v is not None else None, "final": s.final,
                "stats": {"checks": st.checks, "prefilled_tokens": st.prefilled_tokens, "reused_tokens": st.reused_tokens}}
    if op == "stream_drop":
        sessions.pop(args["id"], None)
        return {}
    if op == "ping":
        return {"pid": os.getpid()}
    if op == "sleep":  # tests: hold a worker busy (only reachable from Python, not over HTTP)
        time.sleep(args["seconds"])
        return {}
    raise ValueError(f"unknown op {op!r}")


def run_job(g, sessions, op, args, delay_s: float = 0.0):
    """-> ("ok", result) | ("error", kind, message): exceptions never cross the worker boundary as objects."""
    try:
        return ("ok", execute(g, sessions, op, args, delay_s))
    except GuardError as e:
        return ("error", "invalid", str(e))
    except Exception as e:  # a bug or a runtime failure: logged here, reported without a traceback
        log.exception("worker job %s failed", op)
        return ("error", "internal", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")


def child_main(conn, spec: LoadSpec, env: dict) -> None:
    """Worker process: load the guard, then answer jobs until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent shuts down gracefully and then closes the pipe
    os.environ.update(env)
    try:
        g = load_guard(spec)
    except Exception as e:
        conn.send(("load_failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", os.getpid(), g.vision))
    sessions: dict = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        op, args = msg
        conn.send(run_job(g, sessions, op, args, spec.delay_s))


@dataclass
class Job:
    op: str
    args: dict
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()

    def resolve(self, result=None, error: Exception | None = None) -> None:
        def set_():
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(set_)


class Pool:
    """``Pool(spec, n, mode)``; ``start()`` loads every worker; ``await submit(op, args, timeout)``; ``close()``."""

    def __init__(self, spec: LoadSpec, workers: int = 1, mode: str = "thread", max_queue: int = 64, env: dict | None = None):
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', not {mode!r}")
        self.spec, self.n, self.mode, self.max_queue = spec, workers, mode, max_queue
        self.env = env or {}
        self._cv = threading.Condition()
        self._shared: collections.deque[Job] = collections.deque()
        self._pinned = [collections.deque() for _ in range(workers)]
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._ready = threading.Barrier(workers + 1)
        self._load_errors: list[str] = []
        self.in_flight = 0
        self.restarts = 0
        self.completed = 0
        self.busy_s = 0.0  # summed job compute time, for Retry-After
        self.pids: list[int | None] = [None] * workers
        self._procs: list = [None] * workers
        self.on_job_done = None  # callback(op, seconds, result_or_None) for metrics
        self.vision = False  # the loaded guards take images (set when a worker has loaded)

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self, timeout: float = 600) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._worker, args=(i,), name=f"guard-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._ready.wait(timeout)
        if self._load_errors:
            self.close(wait=False)
            raise GuardError(f"a worker could not load the guard: {self._load_errors[0]}")

    def close(self, wait: bool = True, timeout: float = 60) -> None:
        """Stop taking jobs; workers finish the queued ones, then stop (and their processes exit)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if wait:
            end = time.monotonic() + timeout
            for t in self._threads:
                t.join(max(0.0, end - time.monotonic()))

    @property
    def depth(self) -> int:
        with self._cv:
            return len(self._shared) + sum(len(d) for d in self._pinned)

    def retry_after(self) -> int:
        per_job = self.busy_s / self.completed if self.completed else 1.0
        return max(1, int(self.depth * per_job / self.n + 0.999))

    # --- submission ----------------------------------------------------------------------------------------
    def submit_many(self, jobs: list[tuple[str, dict]], timeout: float, worker: int | None = None) -> list[asyncio.Future]:
        """Queue all jobs or none (QueueFull). Must be called from the event loop's thread."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        out = []
        with self._cv:
            if self._closing:
                raise WorkerLost("the server is shutting down")
            depth = len(self._shared) + sum(len(d) for d in self._pinned) + len(jobs)
            if depth > self.max_queue:
                raise QueueFull()
            if self.completed >= 8 and (depth + self.in_flight) * (self.busy_s / self.completed) / self.n > timeout:
                raise QueueFull()  # it would wait past its deadline: refuse now (429) rather than time out (504)
            for op, args in jobs:
                job = Job(op, args, loop.create_future(), loop, deadline)
                (self._shared if worker is None else self._pinned[worker]).append(job)
                out.append(job.future)
            self._cv.notify_all()
        return out

    async def run(self, op: str, args: dict, timeout: float, worker: int | None = None):
        (fut,) = self.submit_many([(op, args)], timeout, worker)
        return await wait(fut, timeout)

    # --- workers -------------------------------------------------------------------------------------------
    def _take(self, i: int) -> Job | None:
        with self._cv:
            while True:
                if self._pinned[i]:
                    return self._pinned[i].popleft()
                if self._shared:
                    return self._shared.popleft()
                if self._closing:
                    return None
                self._cv.wait()

    def _worker(self, i: int) -> None:
        try:
            state = self._load(i)
        except Exception as e:
            self._load_errors.append(f"{type(e).__name__}: {e}")
            state = None
        self._ready.wait()
        if state is None:
            return
        while True:
            job = self._take(i)
            if job is None:
                break
            if job.future.done():  # the client gave up (timeout) before a worker was free
                continue
            if time.monotonic() > job.deadline:
                job.resolve(error=JobTimeout())
                continue
            with self._cv:
                self.in_flight += 1
            t0 = time.monotonic()
            try:
                state, reply = self._call(i, state, job)
            finally:
                with self._cv:
                    self.in_flight -= 1
            if state is None:  # the pool closed while this worker's process was being replaced
                job.resolve(error=reply)
                return
            dt = time.monotonic() - t0
            self.busy_s += dt
            self.completed += 1
            if isinstance(reply, Exception):
                job.resolve(error=reply)
                continue
            if reply[0] == "ok":
                job.resolve(reply[1])
                if self.on_job_done:
                    self.on_job_done(job.op, dt, reply[1])
            else:
                job.resolve(error=JobFailed(reply[1], reply[2]))
        self._stop(i, state)

    _load_lock = threading.Lock()

    def _load(self, i: int):
        if self.mode == "process":
            return self._spawn(i)
        with Pool._load_lock:  # one at a time: concurrent first use of torch in fresh threads has failed here
            import torch

            # transformers' rotary embedding reads this thread-local; in a fresh thread it was seen to be invalid
            # ("RuntimeError: unsupported scalarType"). Setting it makes the thread's state defined.
            torch.set_autocast_dtype("cpu", torch.bfloat16)
            g = load_guard(self.spec)
            self.vision = g.vision
            return {"guard": g, "sessions": {}}

    def _spawn(self, i: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        p = ctx.Process(target=child_main, args=(child, self.spec, self.env), name=f"guard-worker-{i}", daemon=True)
        p.start()
        child.close()
        msg = parent.recv() if parent.poll(600) else ("load_failed", "timed out loading")
        if msg[0] != "ready":
            p.kill()
            raise RuntimeError(msg[1])
        self.pids[i], self._procs[i], self.vision = p.pid, p, msg[2]
        return {"proc": p, "conn": parent}

    def _call(self, i: int, state, job: Job):
        if self.mode == "thread":
            return state, run_job(state["guard"], state["sessions"], job.op, job.args, self.spec.delay_s)
        conn, proc = state["conn"], state["proc"]
        try:
            conn.send((job.op, job.args))
            # the deadline plus a grace second: the event loop answers the client at the deadline itself
            if conn.poll(max(0.0, job.deadline - time.monotonic()) + 1.0):
                return state, conn.recv()
            error = JobTimeout()
            log.warning("worker %d (pid %d) exceeded a job deadline: killing and replacing it", i, proc.pid)
        except (EOFError, OSError, BrokenPipeError):
            error = WorkerLost(f"worker process {proc.pid} died")
            log.warning("worker %d (pid %d) died: replacing it", i, proc.pid)
        proc.kill()
        proc.join(5)
        conn.close()
        self.restarts += 1
        self.pids[i] = None
        while True:  # replace it; keep trying (another load failure is logged) unless the pool is closing
            try:
                return self._spawn(i), error
            except Exception as e:
                log.error("worker %d could not be restarted: %s", i, e)
                with self._cv:
                    if self._closing:
                        return None, error
                time.sleep(1.0)

    def _stop(self, i: int, state) -> None:
        if self.mode == "process" and state is not None:
            try:
                state["conn"].send(None)
            except (OSError, BrokenPipeError):
                pass
            state["proc"].join(10)
            if state["proc"].is_alive():
                state["proc"].kill()

    def kill_worker_process(self, i: int) -> int:
        """Tests: SIGKILL worker i's process; returns its pid."""
        pid = self.pids[i]
        os.kill(pid, signal.SIGKILL)
        return pid


async def wait(fut: asyncio.Future, timeout: float):
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        fut.cancel()  # a worker that has not taken it yet skips it
        raise JobTimeout() from None
