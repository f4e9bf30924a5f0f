"""One stats schema for every run, host or device.

Each measured request is a record with the fields of ExecuTorch's LLM runner `Stats` (extension/llm/runner/stats.h,
as printed by its `stats_to_json_string`), times in ms from a common origin, plus the derived metrics we report.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

SCHEMA = "guard-bench-1"
TARGET_DECODE_TOK_S = 30.0
TARGET_TTFT_S = 2.5


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


ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")  # what the CPU kernels pick


def cpu_info(text: str) -> dict:
    """Name, family/model and the instruction-set extensions (of ``ISA``) of the first processor in /proc/cpuinfo.
    Two "AMD EPYC" machines here differ by AVX-512 and native bf16, and so by 2x in bf16 training: results say which."""
    first = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        k, _, v = line.partition(":")
        first.setdefault(k.strip(), v.strip())
    flags = set(first.get("flags", "").split())
    return {"cpu": first.get("model name", "?"), "cpu_family": first.get("cpu family"), "cpu_model": first.get("model"),
            "isa": [f for f in ISA if f in flags]}


def machine(threads: int | None = None) -> dict:
    try:
        cpu = cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu = {"cpu": "?", "cpu_family": None, "cpu_model": None, "isa": []}
    return {**cpu, "cores": os.cpu_count(), "available_cores": len(os.sched_getaffinity(0)),
            "threads": threads, "os": f"{platform.system()} {platform.release()}", "arch": platform.machine(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def describe(m: dict) -> str:
    """One line for a results file: 'AMD EPYC (family 25, model 1; avx2), 2 cores, 2 threads, Linux 6.1 x86_64'.
    Records written before the ISA was recorded render without it."""
    cpu = m.get("cpu", "?")
    if m.get("cpu_family") is not None:
        isa = "" if "isa" not in m else f"; {', '.join(m['isa']) or 'no AVX2'}"
        cpu += f" (family {m['cpu_family']}, model {m['cpu_model']}{isa})"
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return f"{cpu}, {m.get('cores')} cores{threads}, {m.get('os', '?')} {m.get('arch', '')}".rstrip()


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


def result_path(stem: str | Path, ext: str) -> Path:
    """STEM.EXT with the extension appended, not swapped in by ``with_suffix``: a stem may hold a dot (``serve_v0.2``),
    and ``with_suffix`` would write ``serve_v0.json``, over another result."""
    stem = Path(stem)
    return stem.parent / f"{stem.name}.{ext.lstrip('.')}"


def write_result(stem: Path, doc: dict, markdown: str, chart=None) -> None:
    """A benchmark's committed result: STEM.json (strict JSON: no NaN), STEM.md and, given ``chart(doc, path)``,
    STEM.png."""
    import json

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    result_path(stem, "json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    result_path(stem, "md").write_text(markdown)
    if chart is not None:
        chart(doc, result_path(stem, "png"))
