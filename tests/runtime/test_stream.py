"""Streaming moderation: every check equals a from-scratch classification of the same prefix."""

import random

import pytest

from guard.runtime.classifier import Guard
from guard.runtime.eager import EagerRunner
from guard.errors import GuardError
from guard.testing import make_checkpoint, make_scripted_checkpoint, tiny

WORDS = ("the a of to and in is it you that he was for on are with as I his they be at one have this from or "
         "had by hot word but what some we can out other were all there when up use your how said an each she "
         "bomb kill knife steal hack 1999 3.14 ,. !? — café naïve 日本語 🙂 \n\n \t").split(" ")


def response(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + rng.choice(["", ".", " ", "\n", "!!"])


def chunks(rng, text):
    i, out = 0, []
    while i < len(text):
        j = i + rng.randint(1, 12)
        out.append(text[i:j])
        i = j
    return out


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    # tiny random model with a longer context so responses fit
    d = make_checkpoint(tmp_path_factory.mktemp("s") / "m", tiny(max_seq_len=2048))
    return EagerRunner(d)


def test_streaming_equals_from_scratch(runner):
    rng = random.Random(0)
    streaming = Guard(runner, runner.tokenizer)
    fresh_runner = EagerRunner(None, model=runner.model, tokenizer=runner.tokenizer)
    reference = Guard(fresh_runner, runner.tokenizer)
    n_checks = 0
    for k in range(20):  # 20 random conversations (50 took ~30 s of the quick loop for the same property)
        prompt = f"question {k}: " + response(rng, rng.randint(1, 8))
        text = response(rng, rng.randint(5, 60))
        stream = streaming.moderate_stream(prompt, check_every=rng.choice([1, 4, 16]))
        fed = ""
        for c in chunks(rng, text):
            fed += c
            v = stream.feed(c)
            if v is not None:
                reference.invalidate()  # from scratch: nothing reused
                ref = reference.classify(prompt, response=fed)
                assert ref.timings["reused_tokens"] == 0
                assert (v.decision, v.raw) == (ref.decision, ref.raw)
                assert v.p_unsafe == pytest.approx(ref.p_unsafe, abs=1e-4)
                n_checks += 1
        v = stream.close()
        reference.invalidate()
        ref = reference.classify(prompt, response=text)
        assert v.p_unsafe == pytest.approx(ref.p_unsafe, abs=1e-4) and v.decision == ref.decision
    assert n_checks > 80


def test_checks_pay_only_for_new_tokens(runner):
    guard = Guard(runner, runner.tokenizer)
    stream = guard.moderate_stream("tell me a story", check_every=16)
    words = ["word"] * 200
    for w in words:
        stream.feed(w + " ")
    stream.close()
    s = stream.stats
    assert s.checks >= 12
    n_suffix = 57  # "\n\n<END CONVERSATION>..." + closing specials + the forced "\n\n" (hand-counted, see test_prompt)
    for new, prefilled in s.per_check[1:]:
        # the new tokens + the suffix + at most a couple re-merged at the cut; never the head or older text
        assert new + n_suffix <= prefilled <= new + n_suffix + 3
    # re-running every check from scratch would process reused + prefilled tokens: over 3x more here
    assert s.reused_tokens + s.prefilled_tokens > 3 * s.prefilled_tokens


def test_split_multibyte_and_tokens(runner):
    guard = Guard(runner, runner.tokenizer)
    text = "Voilà: 日本語 🙂 naïve café"
    data = text.encode()
    stream = guard.moderate_stream("hi", check_every=1)
    for i in range(len(data)):
        stream.feed(data[i:i + 1])  # every byte alone: characters are held back until complete
    assert stream.text == text
    v = stream.close()
    ref = Guard(EagerRunner(None, model=runner.model, tokenizer=runner.tokenizer), runner.tokenizer).classify("hi", response=text)
    assert v.p_unsafe == pytest.approx(ref.p_unsafe, abs=1e-4)
    bad = guard.moderate_stream("hi")
    with pytest.raises(GuardError, match="UTF-8"):
        bad.feed(b"\xff\xfe")


def test_close_without_new_text_and_empty(runner):
    guard = Guard(runner, runner.tokenizer)
    stream = guard.moderate_stream("hi", check_every=1)
    v = stream.feed("Hello there")
    assert v is not None
    checks = stream.stats.checks
    assert stream.close() is v and stream.stats.checks == checks  # nothing new: no recompute
    with pytest.raises(GuardError, match="empty response"):
        guard.moderate_stream("hi").close()
    with pytest.raises(GuardError, match="ends with a user turn"):
        guard.moderate_stream([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_stop_early_on_unsafe_and_feed_after(tmp_path, tokenizer):
    t = tokenizer.tokens
    one = tokenizer.single_id("1")
    d = make_scripted_checkpoint(tmp_path / "m", {t.blank: {t.safe: 1.0, t.unsafe: 3.0}, t.s: {one: 5.0}, one: {t.eot: 5.0}})
    r = EagerRunner(d)
    stream = Guard(r, r.tokenizer).moderate_stream("how do I hurt someone", check_every=2)
    v = None
    for w in "Sure, first you take a knife".split():
        v = v or stream.feed(w + " ")
    assert v.decision == "unsafe" and [h.code for h in v.categories] == ["S1"]
    assert stream.final and stream.feed("more text") is v and stream.close() is v


def test_response_outgrowing_context_is_a_signal_not_a_crash(tmp_path):
    r = EagerRunner(make_checkpoint(tmp_path / "m", tiny(max_seq_len=320)))
    stream = Guard(r, r.tokenizer).moderate_stream("hi", check_every=8)
    last = None
    for _ in range(200):
        last = stream.feed("word ") or last
    assert stream.final and last.decision == "indeterminate" and "too long" in last.reason and last.blocked
    assert stream.close() is last


@pytest.mark.slow
def test_streaming_on_pte_equals_from_scratch(tmp_path_factory, tokenizer):
    """The same equivalence through the ExecuTorch runtime (chunked static prefill, shared KV cache)."""
    from helpers import make_decisive_checkpoint

    from guard.export import ExportConfig, export_model
    from guard.runtime.pte import PteRunner

    d = make_decisive_checkpoint(tmp_path_factory.mktemp("dec") / "m", tokenizer)
    pte = export_model(d, tmp_path_factory.mktemp("pte"), ExportConfig(max_seq_len=768, chunk=32))
    runner, reference = PteRunner(pte), PteRunner(pte)
    streaming, scratch = Guard(runner, runner.tokenizer), Guard(reference, reference.tokenizer)
    rng = random.Random(1)
    decisions = set()
    for k in range(50):
        prompt = f"request {k}: " + response(rng, rng.randint(1, 6))
        text = response(rng, rng.randint(5, 50))
        stream = streaming.moderate_stream(prompt, check_every=rng.choice([3, 8, 16]))
        fed = ""
        for c in chunks(rng, text):
            fed += c
            v = stream.feed(c)
            if v is not None:
                scratch.invalidate()
                ref = scratch.classify(prompt, response=fed)
                assert (v.decision, [h.code for h in v.categories]) == (ref.decision, [h.code for h in ref.categories])
                assert v.p_unsafe == pytest.approx(ref.p_unsafe, abs=1e-4)
                decisions.add(round(v.p_unsafe, 3))
            if stream.final:
                break
        stream.close()
    assert len(decisions) >= 20  # scores vary with the text: the comparison is not between constants


def test_time_based_checks(runner):
    import time

    stream = Guard(runner, runner.tokenizer).moderate_stream("hi", check_every=None, check_every_s=0.05)
    assert stream.feed("Hello") is None  # not due yet
    time.sleep(0.06)
    assert stream.feed(" there") is not None and stream.stats.checks == 1
    with pytest.raises(GuardError, match="check_every"):
        Guard(runner, runner.tokenizer).moderate_stream("hi", check_every=None)
