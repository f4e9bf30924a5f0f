"""One stats schema for every run, host or device.

Each measured request is a record with the fields of ExecuTorch's LLM runner `Stats` (extension/llm/runner/stats.h,
as printed by its `stats_to_json_string`), times in ms from a common origin, plus the derived metrics we report.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys

SCHEMA = "guard-bench-1"
TARGET_DECODE_TOK_S = 30.0
TARGET_TTFT_S = 2.5
METRICS = ("model_load_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "verdict_ms", "peak_rss_mb")


def et_stats(load0, load1, start, prompt_end, first_token, end, n_prompt, n_generated, sampling_ms=0.0) -> dict:
    """A record with ExecuTorch's Stats field names (ms)."""
    return {
        "SCALING_FACTOR_UNITS_PER_SECOND": 1000, "model_load_start_ms": load0, "model_load_end_ms": load1,
        "inference_start_ms": start, "prompt_eval_end_ms": prompt_end, "first_token_ms": first_token,
        "inference_end_ms": end, "aggregate_sampling_time_ms": sampling_ms,
        "num_prompt_tokens": n_prompt, "num_generated_tokens": n_generated,
    }


def summarize(values: list[float]) -> dict:
    v = sorted(values)
    q = lambda p: v[min(len(v) - 1, max(0, round(p * (len(v) - 1))))]
    return {"median": round(statistics.median(v), 3), "p10": round(q(0.1), 3), "p90": round(q(0.9), 3), "n": len(v)}


def machine(threads: int | None = None) -> dict:
    cpu = "?"
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "available_cores": len(os.sched_getaffinity(0)),
            "threads": threads, "os": f"{platform.system()} {platform.release()}", "arch": platform.machine(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}
    return info


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "executorch", "torchao", "transformers", "ondevice-llamaguard"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def environment(threads: int | None = None) -> dict:
    """What every result file records about where it ran: machine (CPU, cores, load average) and versions."""
    return {"machine": machine(threads), "versions": versions()}


def command() -> str:
    return " ".join(["guard" if sys.argv[0].endswith("guard") else sys.argv[0]] + sys.argv[1:])
