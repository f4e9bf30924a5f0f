"""android_runner/: the C++ guard_runner keeps runner_main's contract; compiled against the pip wheel and run here."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from guard.bench import android, prompts
from guard.bench.host import message

SRC = Path(__file__).resolve().parents[2] / "android_runner"


def runner_main_flags() -> dict[str, bool]:
    """--flag -> required, from runner_main's own argparse --help."""
    p = subprocess.run([sys.executable, "-m", "guard.bench.runner_main", "--help"], capture_output=True, text=True)
    usage = p.stdout.split("\n\n")[0]
    return {m.group(2): not m.group(1) for m in re.finditer(r"(\[)?(--[a-z-]+)", usage)}


def test_cpp_flags_match_runner_main():
    cpp = (SRC / "support.cpp").read_text()
    flags = re.search(r"kFlags\[\] = \{(.*?)\};", cpp).group(1)
    required = re.search(r'for \(const char\* f : \{("--[a-z-]+"(, "--[a-z-]+")*)\}\)\s*if \(!got.count', cpp).group(1)
    cpp_flags = {f: f in required for f in re.findall(r'"(--[a-z-]+)"', flags)}
    assert cpp_flags == runner_main_flags()
    header = (SRC / "guard_runner.h").read_text()
    defaults = re.search(r"int threads = (\d+), runs = (\d+), warmup = (\d+);\s*std::vector<int> prompt_tokens\{([\d, ]+)\}", header)
    from guard.bench import runner_main  # the Python defaults, read from the same argparse

    src = Path(runner_main.__file__).read_text()
    py = dict(re.findall(r'"--(runs|warmup|prompt-tokens)", (?:type=int, )?default="?([\d,]+)"?', src))
    assert (defaults.group(2), defaults.group(3), defaults.group(4).replace(" ", "")) == (py["runs"], py["warmup"], py["prompt-tokens"])


class Recorder:
    """A runner that records what Guard feeds it and always answers 'safe'."""

    max_seq_len, output_ids, name = 4096, None, "recorder"

    def __init__(self, tok):
        self.fed, self.safe = [], tok.tokens.safe

    def _logits(self):
        x = torch.zeros(128256)
        x[self.safe] = 10.0
        return x

    def prefill(self, tokens, start_pos):
        self.fed.append((start_pos, list(tokens)))
        return self._logits()

    def decode(self, token, pos):
        return self.prefill([token], pos)


def test_prompts_file_holds_what_guard_feeds(tokenizer, tmp_path):
    from guard.runtime.classifier import Guard

    path = prompts.write(tokenizer, [8, 21], tmp_path / prompts.NAME)
    lines = {tuple(ln.split()[:2]) if ln.split()[0] in ("first", "second") else (ln.split()[0],): ln.split()
             for ln in path.read_text().splitlines()}
    assert lines[("format",)] == ["format", prompts.FORMAT]
    ids = lambda key: [int(x) for x in lines[key][2 if len(key) == 2 else 1:]]
    for n in (8, 21):
        rec = Recorder(tokenizer)
        g = Guard(rec, tokenizer)
        g.classify(message(tokenizer, n))
        assert rec.fed == [(0, ids(("first", str(n))))]
        g.invalidate()
        g.classify(message(tokenizer, 8))
        assert rec.fed[-1] == (0, ids(("warm",)))
        g.classify("x " + message(tokenizer, n - 1))
        keep = rec.fed[-1][0]
        assert keep > 0 and ids(("warm",))[:keep] + rec.fed[-1][1] == ids(("second", str(n)))


def _cannot_build() -> str | None:
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not Path("/usr/include/pthreadpool.h").exists():
        return "pthreadpool.h not installed (Debian: libpthreadpool-dev)"
    return None


@pytest.fixture(scope="module")
def cpp_runner(tmp_path_factory):
    why = _cannot_build()
    if why:
        pytest.skip(f"cannot build android_runner against the wheel here: {why}")
    build = tmp_path_factory.mktemp("guard_runner_build")
    subprocess.run(["cmake", "-S", str(SRC), "-B", str(build), "-DGUARD_RUNNER_FROM_WHEEL=ON",
                    f"-DPython3_EXECUTABLE={sys.executable}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    return build / "guard_runner"


@pytest.fixture(scope="module")
def tiny_pte(tiny_model_dir, tmp_path_factory):
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    cfg = ExportConfig(max_seq_len=512, chunk=32, prune_vocab=True, quant=QuantConfig(scheme="8da4w", group_size=32))
    return export_model(tiny_model_dir, tmp_path_factory.mktemp("pte"), cfg)


@pytest.mark.slow
def test_cpp_runner_usage_errors(cpp_runner, tmp_path):
    p = subprocess.run([str(cpp_runner), "--model", "m.pte"], capture_output=True, text=True)
    assert p.returncode == 2 and "the following arguments are required: --out" in p.stderr
    p = subprocess.run([str(cpp_runner), "--model", "m.pte", "--out", "s.json", "--runs", "x"], capture_output=True, text=True)
    assert p.returncode == 2 and "argument --runs: invalid int value: 'x'" in p.stderr
    (tmp_path / "model.pte").write_bytes(b"not a program")
    p = subprocess.run([str(cpp_runner), "--model", str(tmp_path / "model.pte"), "--out", "s.json"], capture_output=True, text=True)
    assert p.returncode == 2 and "guard_prompts.txt not found" in p.stderr and "python -m guard.bench.prompts" in p.stderr


@pytest.mark.slow
def test_cpp_runner_matches_python_runtime(cpp_runner, tiny_pte, tmp_path):
    """Through the driver's local transport: same schema, token counts, prefix reuse, verdicts and p_unsafe."""
    from guard.runtime.classifier import Guard
    from guard.runtime.load import load_runner

    verdicts = tmp_path / "verdicts.jsonl"
    os.environ["GUARD_RUNNER_VERDICTS"] = str(verdicts)
    try:
        t = android.LocalTransport(tmp_path / "device")
        abi = t.shell("getprop ro.product.cpu.abi").out.split("__rc=")[0].strip()
        doc = android.run_on_device(t, tiny_pte, cpp_runner, runs=1, warmup=0, prompt_tokens="8,40", expected_abi=abi)
    finally:
        del os.environ["GUARD_RUNNER_VERDICTS"]
    assert doc["schema"] == "guard-bench-1" and doc["backend"] == "pte:8da4w" and doc["versions"]["executorch"] == "1.4.1"
    runner, tok = load_runner(pte=str(tiny_pte))
    assert doc["metadata"] == json.loads(json.dumps(runner.meta))
    from guard.bench.schema import et_stats

    keys = list(et_stats(0, 0, 0, 0, 0, 0, 0, 0)) + ["message_tokens", "model_load_ms", "ttft_ms", "prefill_tok_s",
                                                     "decode_tok_s", "verdict_ms", "verdict_prefilled_tokens", "peak_rss_mb", "run", "warmup"]
    assert all(list(r) == keys for r in doc["runs"])
    assert set(doc["summary"]["40"]) == {"model_load_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "verdict_ms", "peak_rss_mb", "num_prompt_tokens"}
    got = [json.loads(ln) for ln in verdicts.read_text().splitlines()]
    g = Guard(runner, tok)
    for rec in doc["runs"]:
        n = rec["message_tokens"]
        first = g.classify(message(tok, n))
        g.invalidate()
        g.classify(message(tok, 8))
        second = g.classify("x " + message(tok, n - 1))
        assert rec["num_prompt_tokens"] == first.prompt_tokens + 1
        assert rec["verdict_prefilled_tokens"] == second.timings["prefilled_tokens"]
        for name, v in (("first", first), ("second", second)):
            cpp = next(x for x in got if x["message_tokens"] == n and x["prompt"] == name)
            assert cpp["decision"] == v.decision and cpp["p_unsafe"] == pytest.approx(v.p_unsafe, abs=1e-6)
