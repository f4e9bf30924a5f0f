"""Inputs longer than the model: the default policy classifies them (guard.runtime.long) instead of failing."""

import json

import pytest

from guard.errors import GuardError
from guard.runtime.batch import run_batch
from guard.runtime.classifier import Guard
from guard.runtime.eager import EagerRunner
from guard.testing import make_checkpoint, tiny

WORDS = "the quick brown fox jumps over a lazy dog while seven bakers sing about bread and rivers ".split()


def text_of(n_words: int, seed: int = 0) -> str:
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words))


@pytest.fixture(scope="module")
def short_guard(tmp_path_factory):
    """A tiny random model that allows only 512 positions, so long inputs are cheap to build."""
    d = make_checkpoint(tmp_path_factory.mktemp("short") / "m", tiny(max_seq_len=512))
    r = EagerRunner(d)
    return Guard(r, r.tokenizer)


def test_20k_token_prompt_is_classified_by_windows(short_guard):
    text = text_of(20_000)
    n = len(short_guard.tokenizer.encode(text))
    assert n >= 20_000
    v = short_guard.classify(text)
    t = v.truncation
    assert t["policy"] == "windows" and t["prompt_tokens"] > n
    assert t["windows"] == len(t["window_p_unsafe"]) > n // t["window_tokens"]
    assert t["window_p_unsafe"][t["chosen_window"]] == max(t["window_p_unsafe"])
    assert v.decision in ("safe", "unsafe", "indeterminate")


def test_windows_cover_the_whole_text_with_overlap():
    from guard.runtime.long import _windows

    spans = _windows(list(range(1000)), 300)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(b - a == 300 for a, b in spans)
    assert all(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), "windows must overlap"


def test_old_turns_are_dropped_before_windowing(short_guard):
    convo = [{"role": "user", "content": text_of(600)}, {"role": "assistant", "content": "ok"},
             {"role": "user", "content": "hello there"}]
    v = short_guard.classify(convo)
    assert v.truncation == {"policy": "last_turns", "prompt_tokens": v.prompt_tokens, "dropped_turns": 2}
    same = short_guard.classify("hello there")
    assert v.p_unsafe == pytest.approx(same.p_unsafe, abs=1e-5)


def test_long_response_keeps_the_prompt_tail(short_guard):
    v = short_guard.classify("what is a good bread recipe?", text_of(3000, 1))
    assert v.role == "Agent" and v.truncation["policy"] == "windows" and v.truncation["context_tokens"] > 0


def test_short_input_has_no_truncation_and_error_policy_refuses(short_guard):
    assert short_guard.classify("hello").truncation == {}
    g = Guard(short_guard.runner, short_guard.tokenizer, long_policy="error")
    with pytest.raises(GuardError, match="long-input policy"):
        g.classify(text_of(2000))
    g = Guard(short_guard.runner, short_guard.tokenizer, long_policy="last_turns")
    assert g.classify(text_of(2000)).truncation["windows"] == 1


def test_batch_records_the_policy(short_guard, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "long", "prompt": text_of(3000)}) + "\n" + json.dumps({"id": "short", "prompt": "hi"}) + "\n")
    counts = run_batch(short_guard, src, tmp_path / "out.jsonl", progress=False)
    assert counts["errors"] == 0
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert rows["long"]["truncation"]["policy"] == "windows" and rows["short"]["truncation"] == {}
