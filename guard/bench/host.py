"""Host benchmark: warm-up, N runs, a sweep over prompt lengths, through the same Runner interface as classify."""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from guard.bench.schema import SCHEMA, command, et_stats, machine, summarize, versions
from guard.errors import GuardError

FILLER = ("please review this message about cooking travel music history science gardening sport weather and "
          "family plans for the weekend ").split()


@dataclass
class BenchConfig:
    runs: int = 5
    warmup: int = 1
    prompt_tokens: list[int] = field(default_factory=lambda: [16, 40, 128, 256])  # user-message lengths
    decode_tokens: int = 16
    dtype: str = "fp32"

    @classmethod
    def parse(cls, prompt_tokens: str, **kw) -> "BenchConfig":
        """From command-line values: ``prompt_tokens`` a comma list; a GuardError names what is out of range."""
        try:
            lengths = [int(x) for x in prompt_tokens.split(",") if x.strip()]
        except ValueError:
            raise GuardError(f"--prompt-tokens must be comma-separated integers, not {prompt_tokens!r}") from None
        cfg = cls(prompt_tokens=lengths, **kw)
        if not lengths or min(lengths) < 2 or cfg.runs < 1 or cfg.warmup < 0 or cfg.decode_tokens < 1:
            raise GuardError("need --runs >= 1, --warmup >= 0, --decode-tokens >= 1 and prompt lengths >= 2")
        return cfg


def message(tok, n: int) -> str:
    """A user message of exactly ``n`` tokens (words of the filler, re-tokenized)."""
    words, i = [], 0
    while len(tok.encode(" ".join(words))) < n:
        words.append(FILLER[i % len(FILLER)])
        i += 1
    return tok.decode(tok.encode(" ".join(words))[:n])


@lru_cache(maxsize=4)
def bench_image(width: int = 1600, height: int = 1200) -> Path:
    """For vision models: a deterministic 1600x1200 JPEG (a phone-photo aspect ratio: 2x2 tiles of 560), written
    once per process into a folder removed when the process ends."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)  # smooth-ish content, realistic JPEG size
    folder = tempfile.mkdtemp(prefix="guard-bench-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "photo.jpg"
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def _load(model, dtype: str, calibrated: bool = True):
    """-> (guard, classify kwargs, (load ms, load CPU ms)): a vision guard gets a fixed 2x2-tile photo
    (image_encode_ms is recorded)."""
    from guard.runtime.load import load

    c0, t0 = _cpu_s(), time.perf_counter()
    guard = load(model, dtype=dtype, calibrated=calibrated)
    load_ms = (time.perf_counter() - t0) * 1e3
    times = (load_ms, (_cpu_s() - c0) * 1e3)  # CPU: every thread of the process, robust to other jobs on the machine
    return guard, ({"image": bench_image()} if guard.vision else {}), times


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _one(guard, image: dict, n_msg: int, load: tuple[float, float], decode_tokens: int) -> dict:
    """TTFT on an empty cache, decode speed after it, then a verdict with the policy head cached (scored as the
    product scores it, with the model's calibration.json: an unsafe verdict also decodes its categories)."""
    (load_ms, load_cpu_ms), runner, tok = load, guard.runner, guard.tokenizer
    guard.invalidate()
    first = guard.classify(message(tok, n_msg), **image)
    ttft = first.timings["prefill_ms"]
    n_prompt = first.prompt_tokens + 1
    pos, logits = n_prompt, None
    d0 = time.perf_counter()
    token = tok.tokens.safe
    for _ in range(decode_tokens):
        logits = runner.decode(token, pos)
        pos += 1
        top = int(logits.argmax())
        token = top if runner.output_ids is None else runner.output_ids[top]
    decode_ms = (time.perf_counter() - d0) * 1e3
    guard.invalidate()
    guard.classify(message(tok, 8), **image)  # the loaded guard has its policy head cached
    v = guard.classify("x " + message(tok, n_msg - 1), **image)  # another message: only the head is reused
    rec = et_stats(0.0, load_ms, load_ms, load_ms + ttft, load_ms + ttft, load_ms + ttft + decode_ms, n_prompt, decode_tokens)
    rec.update({
        "message_tokens": n_msg, "model_load_ms": round(load_ms, 1), "model_load_cpu_ms": round(load_cpu_ms, 1),
        "ttft_ms": round(ttft, 2),
        "prefill_tok_s": round(n_prompt / ttft * 1e3, 1), "decode_tok_s": round(decode_tokens / decode_ms * 1e3, 2),
        "verdict_ms": round(v.latency_ms, 2), "verdict_prefilled_tokens": v.timings["prefilled_tokens"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })
    rec.update({k: round(first.timings[k], 2) for k in ("image_load_ms", "image_encode_ms") if k in first.timings})
    return rec


def run_bench(model: str | None = None, cfg: BenchConfig | None = None, progress=None) -> dict:
    """Measure ``model`` (a .pte or a Hugging Face dir; None: the default model). Returns the stats document (see
    guard.bench.schema)."""
    from guard.runtime.load import resolve

    # TTFT is the prefill of the whole prompt on an empty cache: no policy-head snapshot (guard.runtime.prefix)
    os.environ["GUARD_PREFIX_CACHE"] = "0"
    cfg = cfg or BenchConfig()
    source = resolve(model)
    records = []
    for r in range(cfg.warmup + cfg.runs):
        guard, image, load = _load(source.path, cfg.dtype)
        for n in cfg.prompt_tokens:
            rec = _one(guard, image, n, load, cfg.decode_tokens)
            rec["run"], rec["warmup"] = r, r < cfg.warmup
            records.append(rec)
            if progress:
                progress(rec)
        runner = guard.runner  # what the report needs, kept as data: the next run loads with this one freed
        name, threads = runner.name, getattr(runner, "threads", None)
        meta = getattr(runner, "meta", None) or {"config": runner.model.config.to_dict()}
        del guard, runner
    measured = [x for x in records if not x["warmup"]]
    by_len = {}
    for n in cfg.prompt_tokens:
        rows = [x for x in measured if x["message_tokens"] == n]
        by_len[str(n)] = {m: summarize([x[m] for x in rows]) for m in
                          ("model_load_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "verdict_ms", "peak_rss_mb",
                           "image_load_ms", "image_encode_ms") if m in rows[0]}
        by_len[str(n)]["num_prompt_tokens"] = rows[0]["num_prompt_tokens"]
    return {
        "schema": SCHEMA, "model": str(source.path), "backend": name, "metadata": json.loads(json.dumps(meta, default=str)),
        "machine": machine(threads or __import__("torch").get_num_threads()), "versions": versions(), "command": command(),
        "config": asdict(cfg), "summary": by_len, "runs": records,
    }
