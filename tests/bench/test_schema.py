"""guard.bench.schema: the machine record names the CPU's instruction set, so results from two "AMD EPYC" machines
(one with AVX-512 and native bf16, one AVX2-only) cannot be mistaken for each other."""

from guard.bench.schema import cpu_info, describe, machine, write_result

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 vaes

processor\t: 1
model name\t: some other core
flags\t\t: fpu
"""
ZEN3 = ZEN4.replace("model\t\t: 17", "model\t\t: 1").replace(" avx512f avx512bw avx512_vnni avx512_bf16", "")


def test_cpu_info_reads_the_first_processor_and_its_isa():
    z4, z3 = cpu_info(ZEN4), cpu_info(ZEN3)
    assert z4 == {"cpu": "AMD EPYC 9R14", "cpu_family": "25", "cpu_model": "17",
                  "isa": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]}
    assert z3["isa"] == ["avx2"] and z3["cpu_model"] == "1"
    assert cpu_info("") == {"cpu": "?", "cpu_family": None, "cpu_model": None, "isa": []}


def test_describe_names_the_isa_and_reads_old_records():
    m = {**cpu_info(ZEN3), "cores": 2, "threads": 2, "os": "Linux 6.1", "arch": "x86_64"}
    assert describe(m) == "AMD EPYC 9R14 (family 25, model 1; avx2), 2 cores, 2 threads, Linux 6.1 x86_64"
    old = {"cpu": "AMD EPYC", "cores": 2, "threads": None, "os": "Linux 6.1", "arch": "x86_64"}  # before the ISA
    assert describe(old) == "AMD EPYC, 2 cores, Linux 6.1 x86_64"
    roofline = {**old, "cpu_family": "25", "cpu_model": "17"}  # bench_roofline.py's older top-level family/model
    assert describe(roofline) == "AMD EPYC (family 25, model 17), 2 cores, Linux 6.1 x86_64"


def test_this_machine_is_recorded_with_its_isa():
    m = machine(2)
    assert {"cpu", "cpu_family", "cpu_model", "isa", "cores", "threads", "load_avg"} <= set(m)
    assert isinstance(m["isa"], list) and all(isinstance(f, str) for f in m["isa"])


def test_write_result_writes_json_markdown_and_chart_and_refuses_nan(tmp_path):
    import json

    import pytest

    drawn = []
    write_result(tmp_path / "sub" / "r", {"x": 1, "y": None}, "# r\n", lambda doc, path: drawn.append((doc, path)))
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"x": 1, "y": None}
    assert (tmp_path / "sub" / "r.md").read_text() == "# r\n" and drawn == [({"x": 1, "y": None}, tmp_path / "sub" / "r.png")]
    with pytest.raises(ValueError):  # an undefined metric is null, never NaN (not JSON)
        write_result(tmp_path / "n", {"x": float("nan")}, "")
    write_result(tmp_path / "serve_v0.2", {}, "")  # a dot in the stem is part of the name
    assert (tmp_path / "serve_v0.2.json").is_file() and (tmp_path / "serve_v0.2.md").is_file()


def test_committed_results_are_strict_json():
    """Every committed result file parses as JSON without NaN or Infinity (what write_result guarantees for new ones)."""
    import json
    from pathlib import Path

    def refuse(constant):
        raise ValueError(constant)

    results = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "results").glob("*.json"))
    assert len(results) > 50
    bad = []
    for p in results:
        try:
            json.loads(p.read_text(), parse_constant=refuse)
        except ValueError as e:
            bad.append(f"{p.name}: {e}")
    assert not bad, bad
