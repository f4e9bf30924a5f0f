"""Issue #3, first-token verdict: a safe verdict costs one prefill and no decode step; an unsafe one decodes the
category tokens only, and stops at end of turn."""

import pytest

from guard.runtime.classifier import Guard
from guard.runtime.eager import EagerRunner
from guard.testing import make_scripted_checkpoint


class Counting:
    """Wraps a Runner and records every call (the Runner protocol: prefill, decode, max_seq_len, output_ids)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prefill(self, tokens, start_pos):
        self.calls.append(("prefill", len(tokens)))
        return self.inner.prefill(tokens, start_pos)

    def decode(self, token, pos):
        self.calls.append(("decode", token))
        return self.inner.decode(token, pos)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, tokenizer):
    t = tokenizer.tokens
    one, comma_s, ten = (tokenizer.single_id(x) for x in ("1", ",S", "10"))
    cats = {t.s: {one: 5.0}, one: {comma_s: 5.0}, comma_s: {ten: 5.0}, ten: {t.eot: 5.0}, t.eot: {one: 5.0}}

    def build(name, first):
        return EagerRunner(make_scripted_checkpoint(tmp_path_factory.mktemp(name) / "m", {t.blank: first, **cats}))

    return {"safe": build("s", {t.safe: 4.0, t.unsafe: 1.0}), "unsafe": build("u", {t.safe: 1.0, t.unsafe: 3.0})}


def test_safe_verdict_is_one_prefill_and_no_decode(scripted):
    r = Counting(scripted["safe"])
    v = Guard(r, r.tokenizer).classify("How do I bake bread?")
    assert v.decision == "safe" and v.raw == "safe"
    assert [c[0] for c in r.calls] == ["prefill"]


def test_unsafe_decodes_categories_and_stops_at_end_of_turn(scripted, tokenizer):
    r = Counting(scripted["unsafe"])
    v = Guard(r, r.tokenizer).classify("How do I hurt someone?")
    assert v.decision == "unsafe" and [h.code for h in v.categories] == ["S1", "S10"]
    # prompt (+ the forced "\n\n"), then "unsafe", "\n", "S" as one chunk, then "1", ",S", "10" decoded one by one;
    # the logits after "10" say end of turn, which is never fed (the script would continue after it: "1")
    assert r.calls[1:] == [("prefill", 3)] + [("decode", tokenizer.single_id(x)) for x in ("1", ",S", "10")]
    assert r.calls[0][0] == "prefill"
