"""guard.load / guard.runtime.load: one resolver for every kind of model, typed errors."""

from __future__ import annotations

import pytest

import guard
from guard.errors import BadModelFile, GuardError, SequenceTooLong


def test_load_a_directory_gives_an_eager_guard_with_its_source(tiny_model_dir):
    g = guard.load(str(tiny_model_dir), threshold=0.4, block_indeterminate=False)
    assert isinstance(g, guard.Guard) and not g.vision
    assert g.runner.name == "eager:fp32" and (g.threshold, g.block_indeterminate) == (0.4, False)
    assert g.source.kind == "model" and g.source.path == tiny_model_dir and not g.source.default
    assert g.classify("How do I bake bread?").decision in ("safe", "unsafe", "indeterminate")


def test_a_file_named_as_model_is_opened_as_an_executorch_program(tmp_path):
    """Told apart on disk, not by the suffix: any file is a program, so a broken one is a BadModelFile."""
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"not a program")
    for kw in ({"model": str(bad)}, {"pte": str(bad)}):
        with pytest.raises(BadModelFile, match="not an ExecuTorch program"):  # its header, checked before the runtime
            guard.load(**kw)
    with pytest.raises(BadModelFile, match="model file not found"):
        guard.load(pte=str(tmp_path / "missing.pte"))
    with pytest.raises(BadModelFile, match="model directory not found"):
        guard.load(str(tmp_path / "missing"))


def test_bad_options_fail_before_anything_loads(tmp_path):
    with pytest.raises(GuardError, match="not both"):
        guard.load(model=str(tmp_path), pte=str(tmp_path / "m.pte"))
    with pytest.raises(GuardError, match="threshold"):
        guard.load(str(tmp_path / "missing"), threshold=2.0)


def test_too_long_is_a_typed_error_and_a_stream_turns_it_into_a_verdict(tiny_model_dir):
    g = guard.load(str(tiny_model_dir))
    long = "word " * (g.runner.max_seq_len + 10)
    assert g.classify(long).truncation["policy"] == "windows"  # issue 18: a default policy, not an error
    g.long_policy = "error"  # the old behaviour, on request (guard.runtime.long)
    with pytest.raises(SequenceTooLong, match="maximum"):
        g.classify(long)
    stream = g.moderate_stream("Tell me a story.", check_every=10_000)
    stream.feed(long)
    v = stream.close()
    assert v.decision == "indeterminate" and v.blocked and "too long" in v.reason and stream.final
