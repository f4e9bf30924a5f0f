"""Ray Data batch classification equals `guard classify --jsonl` line for line (local Ray cluster, 2 actors)."""

import json

import pytest

from guard.cli import main


def corpus(path, n=1000):
    lines = []
    for i in range(n):
        if i % 97 == 13:
            lines.append('{"id": "bad-%d", "prompt": ' % i)  # malformed JSON
        elif i % 89 == 7:
            lines.append(json.dumps({"id": f"r{i}", "prompt": 5}))  # wrong type
        elif i % 3 == 0:
            lines.append(json.dumps({"id": f"r{i}", "prompt": f"question number {i}: how do I {'bake' if i % 2 else 'steal'} it?",
                                     "response": f"answer {i}"}))
        elif i % 3 == 1:
            lines.append(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"message {i} " * (1 + i % 7)}]}))
        else:
            lines.append(json.dumps({"id": f"r{i}", "prompt": f"prompt {i} " + "words " * (i % 11)}))
    lines.insert(500, json.dumps({"id": "r2", "prompt": "a duplicate id: an error line, not classified"}))
    lines.insert(600, json.dumps({"id": 7, "prompt": "the integer id 7 is not the string id \"7\""}))
    lines.insert(601, json.dumps({"id": "7", "prompt": "the string id"}))
    path.write_text("\n".join(lines[:n]) + "\n")
    return path


def records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def by_id(path):
    return {(type(d["id"]).__name__, d["id"], d.get("line")): d for d in records(path)}


@pytest.mark.slow
def test_ray_equals_batch_cli(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    src = corpus(tmp_path / "in.jsonl")
    assert main(["classify", "--jsonl", str(src), "--out", str(tmp_path / "batch.jsonl"), "--model", str(tiny_model_dir)]) == 3
    assert main(["classify", "--jsonl", str(src), "--out", str(tmp_path / "ray.jsonl"), "--model", str(tiny_model_dir), "--ray"]) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split(" already in ")[0] == out[1].split(" already in ")[0]  # the same counts
    a, b = by_id(tmp_path / "batch.jsonl"), by_id(tmp_path / "ray.jsonl")
    assert len(a) == 1000 and a.keys() == b.keys()
    assert ("int", 7, None) in a and ("str", "7", None) in a  # ids keep their JSON type
    assert [d["id"] for d in records(tmp_path / "ray.jsonl")] == [d["id"] for d in records(tmp_path / "batch.jsonl")]
    for k, x in a.items():
        y = b[k]
        assert x.get("error") == y.get("error")
        if "error" not in x:
            assert (x["decision"], x["categories"], x["blocked"], x["raw"]) == (y["decision"], y["categories"], y["blocked"], y["raw"])
            assert x["p_unsafe"] == pytest.approx(y["p_unsafe"], abs=1e-6)
    # resuming: the finished lines are skipped, the error lines retried (they fail again: exit 3), nothing doubles
    before = sorted(map(json.dumps, records(tmp_path / "ray.jsonl")))
    assert main(["classify", "--jsonl", str(src), "--out", str(tmp_path / "ray.jsonl"), "--model", str(tiny_model_dir), "--ray"]) == 3
    assert sorted(map(json.dumps, records(tmp_path / "ray.jsonl"))) == before
