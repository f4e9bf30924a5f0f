"""Prometheus metrics on a private registry (GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, pool=None):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("guard_http_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("guard_http_request_duration_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.job_latency = Histogram("guard_job_duration_seconds", "time a worker spent on a job", ["op"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.verdicts = Counter("guard_verdicts", "verdicts by decision", ["decision"], registry=r)
        self.rejected = Counter("guard_rejected", "requests refused before classification", ["reason"], registry=r)
        self.queue_depth = Gauge("guard_queue_depth", "jobs waiting for a worker", registry=r)
        self.in_flight = Gauge("guard_jobs_in_flight", "jobs a worker is running", registry=r)
        self.restarts = Gauge("guard_worker_restarts", "worker processes replaced since start", registry=r)
        self.workers = Gauge("guard_workers", "workers", registry=r)
        self.sessions = Gauge("guard_stream_sessions", "open streaming-moderation sessions", registry=r)
        if pool is not None:
            self.bind(pool)

    def bind(self, pool) -> None:
        self.queue_depth.set_function(lambda: pool.depth)
        self.in_flight.set_function(lambda: pool.in_flight)
        self.restarts.set_function(lambda: pool.restarts)
        self.workers.set(pool.n)
        pool.on_job_done = self.job_done

    def job_done(self, op: str, seconds: float, result) -> None:
        self.job_latency.labels(op).observe(seconds)
        verdict = result.get("verdict") if isinstance(result, dict) and op.startswith("stream") else result
        if isinstance(verdict, dict) and "decision" in verdict:
            self.verdicts.labels(verdict["decision"]).inc()
