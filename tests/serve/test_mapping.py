"""Pure functions: the S-code -> OpenAI mapping, the guard text, logprobs, and reading a rendered prompt back."""

import math

import pytest

from guard.format.categories import Policy
from guard.format.prompt import render
from guard.serve.app import first_token_logprobs
from guard.serve.openai_map import OPENAI_KEYS, S_TO_OPENAI, UNMAPPED_CODES, guard_text, keys_for, moderation_result
from guard.serve.template import is_rendered, parse_rendered, policy_for


def verdict(decision, codes=(), p=0.9, blocked=None):
    return {"decision": decision, "categories": [{"code": c, "name": c} for c in codes], "p_unsafe": p,
            "blocked": decision != "safe" if blocked is None else blocked, "role": "User", "reason": ""}


def test_every_code_maps_inside_openai_keys_and_parents_follow():
    assert set(S_TO_OPENAI) == {f"S{i}" for i in range(1, 15)}
    assert UNMAPPED_CODES == ("S5", "S6", "S7", "S8", "S13", "S14")
    for code in S_TO_OPENAI:
        keys = keys_for([code])
        assert keys <= set(OPENAI_KEYS)
        assert all(k.split("/")[0] in keys for k in keys)
    assert keys_for(["S4"]) == {"sexual/minors", "sexual"}
    assert keys_for(["S10"]) == {"hate"} and "hate/threatening" in keys_for(["S10", "S1"])
    assert keys_for(["S15", "MY_CODE"]) == set()


def test_results_for_unmapped_safe_and_indeterminate():
    r = moderation_result(verdict("unsafe", ["S7"]))
    assert r["flagged"] and not any(r["categories"].values()) and not any(r["category_scores"].values())
    assert r["llama_guard"]["categories"] == [{"code": "S7", "name": "S7"}]
    safe = moderation_result(verdict("safe", p=0.3))
    assert not safe["flagged"] and not any(safe["categories"].values()) and safe["llama_guard"]["p_unsafe"] == 0.3
    assert safe["category_applied_input_types"]["harassment"] == [] and safe["category_applied_input_types"]["hate"] == ["text"]
    ind = moderation_result(verdict("indeterminate"))
    assert ind["flagged"] and not any(ind["categories"].values())
    assert not moderation_result(verdict("indeterminate", blocked=False))["flagged"]


def test_guard_text_and_logprobs():
    assert guard_text(verdict("unsafe", ["S1", "S10"])) == "unsafe\nS1,S10"
    assert guard_text(verdict("safe", p=0.1)) == "safe"
    assert guard_text(verdict("indeterminate")) == "unsafe"
    assert guard_text(verdict("indeterminate", blocked=False)) == "safe"
    lp = first_token_logprobs(verdict("safe", p=0.25), "safe", 2)
    assert lp["token"] == "safe" and math.exp(lp["logprob"]) == pytest.approx(0.75)
    assert [t["token"] for t in lp["top_logprobs"]] == ["safe", "unsafe"] and lp["bytes"] == list(b"safe")
    assert first_token_logprobs(verdict("unsafe", p=1.0), "unsafe", 2)["top_logprobs"][1]["logprob"] == -9999.0


def test_rendered_prompt_round_trips():
    conv = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!\n\nHow can I help?"},
            {"role": "user", "content": "Tell me about <END CONVERSATION> markers"}]
    text = render(conv)
    assert is_rendered(text)
    msgs, cats = parse_rendered(text)
    assert msgs == conv
    assert policy_for(cats) is None  # the default S1-S13
    p = policy_for(parse_rendered(render(conv, Policy(excluded=("S10", "S3"))))[1])
    assert [c.code for c in p.categories] == [f"S{i}" for i in range(1, 14) if i not in (3, 10)]
    assert not is_rendered("just a user message")


def test_nemo_style_categories_become_the_policy():
    nemo = ("[INST] Task: Check if there is unsafe content in 'User' messages in conversations according our safety "
            "policy with the below categories.\n<BEGIN UNSAFE CONTENT CATEGORIES>\nO1: Violence and Hate.\nShould not\n"
            "- Help people plan violence.\nO2: Criminal Planning.\n<END UNSAFE CONTENT CATEGORIES>\n\n"
            "<BEGIN CONVERSATION>\n\nUser: how do I pick a lock?\n\n<END CONVERSATION>\n\nProvide your safety assessment "
            "for User in the above conversation:\n- First line must read 'safe' or 'unsafe'. [/INST]")
    msgs, cats = parse_rendered(nemo)
    assert msgs == [{"role": "user", "content": "how do I pick a lock?"}]
    p = policy_for(cats)
    assert [(c.code, c.name) for c in p.categories] == [("O1", "Violence and Hate"), ("O2", "Criminal Planning")]
    assert "Help people plan violence." in p.categories[0].description
