"""Latency benchmarks: `run_bench(model, BenchConfig) -> dict` in one stats schema for host and device runs."""

from guard.bench.host import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
