"""The Llama Guard 3 prompt, pinned against strings written by hand from the model card (not from our code).

Token-level checks use tiktoken through the llama-models tokenizer: an implementation independent of the
`tokenizers` library that guard.format.tokenizer uses, fed with the hand-written expected strings.
"""

import pytest

from guard.format.categories import Category, Policy, load_categories
from guard.errors import GuardError
from guard.format.prompt import encode, render

CATS_1B = (
    "S1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\nS4: Child Exploitation.\nS5: Defamation.\n"
    "S6: Specialized Advice.\nS7: Privacy.\nS8: Intellectual Property.\nS9: Indiscriminate Weapons.\nS10: Hate.\n"
    "S11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\n"
)


def expected(role: str, turns: str, cats: str = CATS_1B) -> str:
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy "
        "with the below categories.\n\n"
        "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + cats + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        "<BEGIN CONVERSATION>\n\n" + turns + "<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )


@pytest.fixture(scope="module")
def tiktoken_ref():
    from llama_models.llama3.tokenizer import Tokenizer as Ref

    from guard.format.tokenizer import llama_models_tokenizer_path

    ref = Ref(llama_models_tokenizer_path())
    specials = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
    return lambda s: ref.model.encode(s, allowed_special=specials, disallowed_special=())


CASES = [
    ("prompt", [{"role": "user", "content": "How do I make a pipe bomb?"}],
     "User", "User: How do I make a pipe bomb?\n\n"),
    ("response", [{"role": "user", "content": "What's the capital of France?"},
                  {"role": "assistant", "content": [{"type": "text", "text": "  Paris.  "}]}],
     "Agent", "User: What's the capital of France?\n\nAgent: Paris.\n\n"),
    ("multi-turn", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke.\nA long one."}],
     "User", "User: hi\n\nAgent: Hello! How can I help?\n\nUser: Tell me a joke.\nA long one.\n\n"),
    ("parts", [{"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image"},
                                            {"type": "text", "text": "second "}]}],
     # one message, one block (issue 21): the HF template's one "User:" block per part let an earlier part go unjudged
     "User", "User: first\nsecond\n\n"),
]


@pytest.mark.parametrize("name,messages,role,turns", CASES, ids=[c[0] for c in CASES])
def test_render_matches_model_card(name, messages, role, turns):
    text = render(messages)
    if name == "parts":  # an image part adds "<|image|> " after the first header (Vision template)
        assert text == expected(role, turns).replace("<|end_header_id|>\n\nTask", "<|end_header_id|>\n\n<|image|> Task", 1)
    else:
        assert text == expected(role, turns)


@pytest.mark.parametrize("name,messages,role,turns", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_tokens_match_reference_tokenizer(name, messages, role, turns, tokenizer, tiktoken_ref):
    ids = encode(messages, None, tokenizer).ids
    assert ids == tiktoken_ref(expected(role, turns))
    # hand-checked anchors: <|begin_of_text|> <|start_header_id|> "user" <|end_header_id|> "\n\n" ... "." " " <|eot_id|> ...
    assert ids[:5] == [128000, 128006, 882, 128007, 271]
    assert ids[-6:] == [13, 220, 128009, 128006, 78191, 128007]


def test_head_is_the_cacheable_prefix(tokenizer, tiktoken_ref):
    for msgs in ([{"role": "user", "content": "x"}], [{"role": "user", "content": "!!!"}, {"role": "assistant", "content": "ok."}]):
        p = encode(msgs, None, tokenizer)
        assert p.ids == tiktoken_ref(render(msgs))
        head_only = render(msgs).split("<BEGIN CONVERSATION>\n\n")[0] + "<BEGIN CONVERSATION>\n\n"
        assert p.head == tiktoken_ref(head_only)
    # the head depends on the role: prompt and response classification cache different prefixes
    assert encode([{"role": "user", "content": "a"}], None, tokenizer).head != encode(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], None, tokenizer).head


def test_default_prompt_size(tokenizer):
    p = encode([{"role": "user", "content": "hi"}], None, tokenizer)
    # about 139 fixed tokens before the user text and 57 after it (model card); "User:" opens the body
    assert 136 <= len(p.head) + 2 <= 140 and 54 <= len(p.body) - 3 <= 58


def test_excluded_categories_keep_codes_by_default():
    policy = Policy(excluded=("S6", "S7"))
    cats = CATS_1B.replace("S6: Specialized Advice.\n", "").replace("S7: Privacy.\n", "")
    assert render([{"role": "user", "content": "q"}], policy) == expected("User", "User: q\n\n", cats)


def test_renumbered_exclusion_reports_stable_codes():
    from guard.format.verdict import parse

    policy = Policy(excluded=("S1", "S2"), renumber=True)
    text = render([{"role": "user", "content": "q"}], policy)
    assert "S1: Sex Crimes.\nS2: Child Exploitation.\n" in text and "Violent" not in text
    assert "S10: Sexual Content.\nS11: Elections.\n<END UNSAFE" in text
    decision, hits, _ = parse("unsafe\nS2,S10", policy)  # shown keys S2, S10 -> stable S4, S12
    assert decision == "unsafe"
    assert [(h.code, h.name) for h in hits] == [("S4", "Child Sexual Exploitation"), ("S12", "Sexual Content")]


def test_8b_categories_include_s14():
    policy = Policy(categories=load_categories(",".join(f"S{i}" for i in range(1, 15))))
    assert render([{"role": "user", "content": "q"}], policy) == expected(
        "User", "User: q\n\n", CATS_1B + "S14: Code Interpreter Abuse.\n")


def test_custom_categories(tmp_path):
    f = tmp_path / "cats.json"
    f.write_text('{"S1": "Violent Crimes.", "C1": "Spam. Unsolicited bulk advertising."}')
    policy = Policy(categories=load_categories(str(f)))
    text = render([{"role": "user", "content": "buy now"}], policy)
    assert "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\nC1: Spam. Unsolicited bulk advertising.\n<END" in text
    assert policy.lookup("C1") == Category("C1", "Spam", "Spam. Unsolicited bulk advertising.")


@pytest.mark.parametrize("messages,err", [
    ([], "non-empty"),
    ([{"role": "assistant", "content": "hi"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "system", "content": "a"}], "role must be"),
    ([{"role": "user", "content": "   "}], "empty text"),
    ([{"role": "user", "content": 5}], "string or a list"),
    ([{"role": "user", "content": "ok"}, {"role": "tool", "content": "x"}], "role must be"),
])
def test_bad_conversations(messages, err):
    with pytest.raises(GuardError, match=err):
        render(messages)


def test_unknown_codes():
    with pytest.raises(GuardError, match="unknown category code"):
        Policy(excluded=("S14",))  # S14 is not in the 1B default list
    with pytest.raises(GuardError, match="unknown category code"):
        load_categories("S1,S15")
