"""The eager backend: checkpoint checks, tokenizer sources, dtypes."""

import shutil

import pytest

from guard.runtime.classifier import Guard
from guard.runtime.eager import EagerRunner
from guard.errors import GuardError
from guard.format.tokenizer import Tokenizer, llama_models_tokenizer_path


def test_tiktoken_tokenizer_model_in_dir(tiny_copy, tokenizer):
    (tiny_copy / "tokenizer.json").unlink()
    shutil.copy(llama_models_tokenizer_path(), tiny_copy / "tokenizer.model")
    tok = Tokenizer.from_dir(tiny_copy)
    assert tok.tokens == tokenizer.tokens
    assert tok.tokens.safe == 19193 and tok.tokens.unsafe == 39257 and tok.tokens.eot == 128009  # model card ids
    text = "Some text with <|eot_id|> inside, émoji 🙂 and\n\nnewlines."
    assert tok.encode(text) == tokenizer.encode(text)


def test_not_a_llama3_tokenizer(tiny_copy):
    (tiny_copy / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}')
    with pytest.raises(GuardError):
        Tokenizer.from_dir(tiny_copy)


def test_bf16_close_to_fp32(tiny_model_dir):
    fp32, bf16 = EagerRunner(tiny_model_dir), EagerRunner(tiny_model_dir, dtype="bf16")
    a = Guard(fp32, fp32.tokenizer).classify("Is this close?")
    b = Guard(bf16, bf16.tokenizer).classify("Is this close?")
    assert b.p_unsafe == pytest.approx(a.p_unsafe, abs=0.02)
    assert next(bf16.model.parameters()).dtype.is_floating_point and str(next(bf16.model.parameters()).dtype) == "torch.bfloat16"


@pytest.mark.parametrize("native", [False, True])
def test_bf16_warns_only_where_the_cpu_emulates_it(tiny_model_dir, monkeypatch, native):
    """--dtype bf16 is the user's choice; on a CPU without native bf16 (emulated, usually slower than fp32) it warns."""
    import logging

    import guard.runtime.eager as eager

    warned = []
    handler = logging.Handler()
    handler.emit = lambda r: warned.append(r.getMessage())
    monkeypatch.setattr(eager, "bf16_native", lambda: native)
    eager.log.addHandler(handler)
    try:
        EagerRunner(tiny_model_dir, dtype="bf16")
        EagerRunner(tiny_model_dir)  # fp32 never warns
    finally:
        eager.log.removeHandler(handler)
    assert sum("no native bf16" in w for w in warned) == (0 if native else 1)


def test_safetensors_preferred_over_pickle(tiny_copy):
    (tiny_copy / "pytorch_model.bin").write_bytes(b"not a pickle, must never be read")
    runner = EagerRunner(tiny_copy)  # loads the safetensors, ignores the .bin
    assert runner.max_seq_len == 1024


def test_missing_config(tiny_copy):
    (tiny_copy / "config.json").unlink()
    with pytest.raises(GuardError, match="no config.json"):
        EagerRunner(tiny_copy)


def test_public_api(tiny_model_dir):
    import guard

    g = guard.load(model=str(tiny_model_dir), policy=guard.Policy(excluded=("S13",)))
    v = g.classify("hello")
    assert isinstance(v, guard.Verdict) and v.decision in ("safe", "unsafe", "indeterminate") and 0 <= v.p_unsafe <= 1
    with pytest.raises(guard.GuardError):
        guard.load(model=str(tiny_model_dir) + "-missing")
