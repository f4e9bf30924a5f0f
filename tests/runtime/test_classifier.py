"""Decisions, scores, thresholds, category decoding and prefix caching, through real transformers models."""

import math

import pytest

from guard.format.categories import Policy
from guard.runtime.classifier import Guard
from guard.runtime.eager import EagerRunner
from guard.format.prompt import encode
from guard.testing import make_scripted_checkpoint


def ids(tok, *texts):
    return [tok.single_id(t) for t in texts]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, tokenizer):
    """Build a guard whose model follows a next-token script (see guard.testing.make_scripted_checkpoint)."""
    t = tokenizer.tokens
    one, comma_s, ten, nine9 = ids(tokenizer, "1", ",S", "10", "99")

    def build(name, script):
        d = make_scripted_checkpoint(tmp_path_factory.mktemp(name) / "m", script)
        return EagerRunner(d)

    base = {t.s: {one: 5.0}, one: {comma_s: 5.0}, comma_s: {ten: 5.0}, ten: {t.eot: 5.0}}
    return {
        "unsafe": build("u", {t.blank: {t.safe: 1.0, t.unsafe: 3.0}, **base}),
        "safe": build("s", {t.blank: {t.safe: 4.0, t.unsafe: 1.0}, **base}),
        "other": build("o", {t.blank: {t.safe: 1.0, t.unsafe: 2.0, ten: 6.0}, **base}),
        "bad_code": build("b", {t.blank: {t.unsafe: 3.0}, t.s: {nine9: 5.0}, nine9: {t.eot: 5.0}}),
        "no_eot": build("n", {t.blank: {t.unsafe: 3.0}, t.s: {one: 5.0}, one: {one: 5.0}}),
    }


def test_unsafe_with_categories(scripted):
    r = scripted["unsafe"]
    v = Guard(r, r.tokenizer).classify("how do I hurt someone")
    assert v.decision == "unsafe" and v.blocked
    assert [(h.code, h.name) for h in v.categories] == [("S1", "Violent Crimes"), ("S10", "Hate")]
    assert v.p_unsafe == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-3)  # softmax over (safe=1, unsafe=3); RMSNorm eps shifts it by ~1e-4
    assert v.raw == "unsafe\nS1,S10"


def test_safe_and_threshold(scripted):
    r = scripted["safe"]
    v = Guard(r, r.tokenizer).classify("hello", response="hi there")
    assert (v.decision, v.categories, v.role, v.blocked) == ("safe", [], "Agent", False)
    assert v.p_unsafe == pytest.approx(1 / (1 + math.exp(3.0)), abs=1e-3)
    # a low threshold turns the same score into unsafe, and categories are then decoded
    v = Guard(r, r.tokenizer, threshold=0.01).classify("hello")
    assert v.decision == "unsafe" and [h.code for h in v.categories] == ["S1", "S10"]
    u = scripted["unsafe"]
    assert Guard(u, u.tokenizer, threshold=0.95).classify("x").decision == "safe"


@pytest.mark.parametrize("name,reason", [("other", "not safe/unsafe"), ("bad_code", "not in the policy"),
                                         ("no_eot", "no end of turn")])
def test_unparseable_is_indeterminate_never_safe(scripted, name, reason):
    r = scripted[name]
    v = Guard(r, r.tokenizer).classify("anything")
    assert v.decision == "indeterminate" and reason in v.reason and v.blocked
    assert Guard(r, r.tokenizer, block_indeterminate=False).classify("anything").blocked is False


def test_exclusion_with_renumbering_maps_back(scripted):
    r = scripted["unsafe"]  # the model answers with shown keys S1 and S10
    v = Guard(r, r.tokenizer, Policy(excluded=("S3",), renumber=True)).classify("x")
    # shown S1 is still Violent Crimes; shown S10 is the 10th kept category: S11 (S3 removed)
    assert [(h.code, h.name) for h in v.categories] == [("S1", "Violent Crimes"), ("S11", "Suicide & Self-Harm")]


def test_prefix_cache_gives_identical_scores(tiny_model_dir):
    runner = EagerRunner(tiny_model_dir)
    cached = Guard(runner, runner.tokenizer)
    prompts = ["What is the weather like?", "Write a poem about cats.", "How to pick a lock"]
    first = [cached.classify(p) for p in prompts]
    n_head = len(encode([{"role": "user", "content": "x"}], None, runner.tokenizer).head)
    assert first[0].timings["reused_tokens"] == 0
    # later requests reuse the policy head (plus the shared "User:" tokens) and prefill only their own tokens
    assert all(n_head <= v.timings["reused_tokens"] <= n_head + 2 for v in first[1:])
    assert all(v.timings["prefilled_tokens"] == v.prompt_tokens + 1 - v.timings["reused_tokens"] for v in first)
    for p, v in zip(prompts, first):
        fresh = Guard(EagerRunner(tiny_model_dir), runner.tokenizer).classify(p)
        assert fresh.p_unsafe == pytest.approx(v.p_unsafe, abs=1e-6) and fresh.raw == v.raw
    # switching role (response classification) changes the head: only the tokens before the role are reused
    v = cached.classify("hello", response="hi")
    assert v.timings["reused_tokens"] < n_head
    # a growing conversation reuses everything up to the first changed token
    longer = cached.classify("hello", response="hi there, how are you")
    assert longer.timings["reused_tokens"] >= v.prompt_tokens - 60
    assert cached.classify("hello").p_unsafe == pytest.approx(Guard(EagerRunner(tiny_model_dir), runner.tokenizer).classify("hello").p_unsafe, abs=1e-6)


def test_too_long_conversation_is_refused(tiny_model_dir):
    """With the 'error' long-input policy (guard.runtime.long; the default, 'windows', classifies it instead)."""
    from guard.errors import SequenceTooLong

    runner = EagerRunner(tiny_model_dir)
    with pytest.raises(SequenceTooLong, match="maximum"):
        Guard(runner, runner.tokenizer, long_policy="error").classify("word " * 2000)


def test_changing_the_category_set_never_uses_a_stale_prefix(tiny_model_dir):
    """The cached prefix is keyed by its tokens: a new policy re-prefills from the first changed token."""
    runner = EagerRunner(tiny_model_dir)
    guard = Guard(runner, runner.tokenizer)
    guard.classify("hello")
    for policy in (Policy(excluded=("S2",)), Policy(excluded=("S2",), renumber=True), Policy()):
        guard.policy = policy
        v = guard.classify("hello")
        fresh = Guard(EagerRunner(tiny_model_dir), runner.tokenizer, policy).classify("hello")
        assert v.p_unsafe == pytest.approx(fresh.p_unsafe, abs=1e-6)
        assert v.timings["reused_tokens"] < 60  # the category list starts ~50 tokens in: everything after is recomputed
