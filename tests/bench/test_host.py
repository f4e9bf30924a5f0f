"""guard bench: the stats schema, the report and the chart, on a tiny model (no timing assertions)."""

import json

import pytest

from guard.bench import BenchConfig, run_bench
from guard.bench.schema import SCHEMA
from guard.cli import main

ET_FIELDS = ("model_load_start_ms", "model_load_end_ms", "inference_start_ms", "prompt_eval_end_ms", "first_token_ms",
             "inference_end_ms", "aggregate_sampling_time_ms", "num_prompt_tokens", "num_generated_tokens")


def test_schema_and_sweep(tiny_model_dir):
    doc = run_bench(str(tiny_model_dir), BenchConfig(runs=2, warmup=1, prompt_tokens=[8, 40], decode_tokens=4))
    assert doc["schema"] == SCHEMA and doc["backend"] == "eager:fp32"
    assert len(doc["runs"]) == 3 * 2 and sum(r["warmup"] for r in doc["runs"]) == 2
    for r in doc["runs"]:
        assert all(k in r for k in ET_FIELDS)
        assert r["model_load_end_ms"] <= r["inference_start_ms"] <= r["prompt_eval_end_ms"] <= r["inference_end_ms"]
        assert r["num_generated_tokens"] == 4 and r["ttft_ms"] > 0 and r["decode_tok_s"] > 0
    s8, s40 = doc["summary"]["8"], doc["summary"]["40"]
    assert s40["num_prompt_tokens"] - s8["num_prompt_tokens"] == 32  # the sweep really changes the prompt length
    assert s8["ttft_ms"]["p10"] <= s8["ttft_ms"]["median"] <= s8["ttft_ms"]["p90"] and s8["ttft_ms"]["n"] == 2
    # the cached-head verdict prefills the message and suffix only, not the ~136-token head
    assert all(r["verdict_prefilled_tokens"] < r["num_prompt_tokens"] - 100 for r in doc["runs"])
    assert doc["machine"]["cores"] >= 1 and doc["versions"]["torch"].startswith("2.13")


def test_cli_writes_report_and_compares(tiny_model_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b.v2"  # a dot in a stem is part of its name: b.v2.json, not b.json
    assert main(["bench", str(tiny_model_dir), "--runs", "1", "--warmup", "0", "--prompt-tokens", "8,16", "--out", str(a)]) == 0
    assert main(["bench", str(tiny_model_dir), "--runs", "1", "--warmup", "0", "--prompt-tokens", "8,16", "--out", str(b),
                 "--label", "second"]) == 0
    md = a.with_suffix(".md").read_text()
    assert "| 8 |" in md and "| 16 |" in md and ("pass" in md or "FAIL" in md)
    assert a.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    cmp = tmp_path / "cmp"
    assert main(["bench", "--compare", str(a.with_suffix(".json")), str(tmp_path / "b.v2.json"), "--out", str(cmp)]) == 0
    text = cmp.with_suffix(".md").read_text()
    assert "## second" in text and text.count("## ") == 2 and cmp.with_suffix(".png").is_file()
    assert json.loads((tmp_path / "b.v2.json").read_text())["label"] == "second" and not (tmp_path / "b.json").exists()
    # --compare never overwrites an earlier report (issue 21); its chart has the TTFT, decode and verdict panels
    before = a.with_suffix(".md").read_bytes()
    assert main(["bench", "--compare", str(a.with_suffix(".json")), str(tmp_path / "b.v2.json"), "--out", str(a)]) == 0
    assert a.with_suffix(".md").read_bytes() == before and (tmp_path / "a-2.md").is_file()
    from PIL import Image

    assert Image.open(tmp_path / "a-2.png").size[0] == 1600  # three panels, 16 inches at 100 dpi


@pytest.mark.parametrize("args,msg", [(["--prompt-tokens", "8,x"], "comma-separated"), (["--runs", "0"], "--runs >= 1")])
def test_bad_options(tiny_model_dir, args, msg, capsys):
    assert main(["bench", str(tiny_model_dir), *args]) == 2
    assert msg in capsys.readouterr().err


def test_compare_rejects_other_json(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text('{"hello": 1}')
    assert main(["bench", "--compare", str(f)]) == 2
    assert "not a guard bench result" in capsys.readouterr().err
