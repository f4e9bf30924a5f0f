"""benchmarks/quant_fidelity.py: how far a quantization scheme moves a guard's scores from fp32."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quant_fidelity.py"


@pytest.fixture(scope="module")
def qf():
    return load_script(SCRIPT)


def test_spearman_and_fidelity_by_hand(qf):
    assert qf.ranks([0.3, 0.1, 0.3, 0.9]) == [1.5, 0.0, 1.5, 3.0]  # ties share their mean rank
    assert qf.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert qf.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    ref = [{"margin": 2.0, "unsafe": True, "p_unsafe": 0.9}, {"margin": -1.0, "unsafe": False, "p_unsafe": 0.2},
           {"margin": -3.0, "unsafe": False, "p_unsafe": 0.1}]
    got = [{"margin": 1.0, "unsafe": True, "p_unsafe": 0.8}, {"margin": 0.5, "unsafe": True, "p_unsafe": 0.6},
           {"margin": -3.0, "unsafe": False, "p_unsafe": 0.1}]
    f = qf.fidelity(ref, got)
    assert f["mean_abs_margin_diff"] == pytest.approx(2.5 / 3) and f["p95_abs_margin_diff"] == pytest.approx(1.0)
    assert f["verdict_agreement"] == pytest.approx(2 / 3) and f["spearman_p_unsafe"] == pytest.approx(1.0)


def test_bad_scheme_and_missing_data_are_one_line(qf, tmp_path):
    assert qf.parse_scheme("8da4w:64") == ("8da4w", 64) and qf.parse_scheme("8da8w") == ("8da8w", 0)
    for bad in ("8da4w", "8da8w:32", "int3"):
        with pytest.raises(Exception, match="use fp32, 8da4w:GROUP or 8da8w"):
            qf.parse_scheme(bad)
    for args in (["--schemes", "int3"], ["--data", str(tmp_path / "nowhere.jsonl")]):
        cmd = [sys.executable, str(SCRIPT), "--hf", str(tmp_path), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "r")]
        out = subprocess.run(cmd + args, capture_output=True, text=True)
        assert out.returncode != 0 and out.stderr.startswith("quant_fidelity: ") and "Traceback" not in out.stderr, out.stderr
