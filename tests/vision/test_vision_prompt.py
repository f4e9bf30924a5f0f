"""Llama Guard 3 Vision prompt, pinned against strings and ids written by hand from the 11B-Vision model card.

The card's chat template emits ``<|image|> `` right after the first ``<|end_header_id|>\\n\\n`` when any message has
an image part, then ``Task: ...``; everything else is the 1B template. ``<|image|>`` is 128256 in the Hugging Face
Llama 3.2 Vision tokenizer. Plain text is encoded by tiktoken (llama-models), independent of `tokenizers`.
"""

import pytest

from guard.errors import GuardError
from guard.format.prompt import encode, render

CATS = (
    "S1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\nS4: Child Exploitation.\nS5: Defamation.\n"
    "S6: Specialized Advice.\nS7: Privacy.\nS8: Intellectual Property.\nS9: Indiscriminate Weapons.\nS10: Hate.\n"
    "S11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\n"
)


def card(role: str, turns: str) -> str:
    """The 11B-Vision chat template's output for a conversation with one image, written out by hand."""
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|> "
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy "
        "with the below categories.\n\n"
        "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + CATS + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        "<BEGIN CONVERSATION>\n\n" + turns + "<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )


IMG = {"type": "image"}
PROMPT = [{"role": "user", "content": [IMG, {"type": "text", "text": "How do I use the thing in this picture?"}]}]
RESPONSE = PROMPT + [{"role": "assistant", "content": [{"type": "text", "text": "Point it at the target."}]}]
CASES = [
    ("prompt", PROMPT, "User", "User: How do I use the thing in this picture?\n\n"),
    ("response", RESPONSE, "Agent", "User: How do I use the thing in this picture?\n\nAgent: Point it at the target.\n\n"),
]


@pytest.fixture(scope="module")
def vtok():
    from guard.vision.tokenizer import vision_tokenizer

    return vision_tokenizer()


@pytest.fixture(scope="module")
def reference():
    """Expected ids from a hand-written string: specials by their published ids, text by tiktoken."""
    from llama_models.llama3.tokenizer import Tokenizer as Ref

    from guard.format.tokenizer import llama_models_tokenizer_path

    ref = Ref(llama_models_tokenizer_path())
    specials = {"<|begin_of_text|>": 128000, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
                "<|eot_id|>": 128009, "<|image|>": 128256}

    def ids(s: str) -> list[int]:
        out, rest = [], s
        while rest:
            at = min(((rest.find(k), k) for k in specials if k in rest), default=(len(rest), None))
            out += ref.model.encode(rest[:at[0]], allowed_special=set(), disallowed_special=()) if at[0] else []
            if at[1] is None:
                break
            out.append(specials[at[1]])
            rest = rest[at[0] + len(at[1]):]
        return out

    return ids


@pytest.mark.parametrize("name,messages,role,turns", CASES, ids=[c[0] for c in CASES])
def test_vision_render_matches_model_card(name, messages, role, turns):
    assert render(messages) == card(role, turns)


@pytest.mark.parametrize("name,messages,role,turns", CASES, ids=[c[0] for c in CASES])
def test_vision_tokens(name, messages, role, turns, vtok, reference):
    p = encode(messages, None, vtok)
    assert p.ids == reference(card(role, turns))
    # by hand: <|begin_of_text|> <|start_header_id|> "user" <|end_header_id|> "\n\n" <|image|> " Task" ":" ...
    assert p.ids[:6] == [128000, 128006, 882, 128007, 271, 128256]
    assert vtok.decode(p.ids[6:8]) == " Task:"
    assert p.ids.count(128256) == 1 and p.head.index(128256) == 5  # the image token is in the cacheable head
    assert p.ids[-6:] == [13, 220, 128009, 128006, 78191, 128007]  # "." " " <|eot_id|> <|start_header_id|> "assistant" <|end_header_id|>


def test_image_head_differs_only_by_the_image_token(vtok):
    text_only = encode([{"role": "user", "content": "q"}], None, vtok)
    with_image = encode([{"role": "user", "content": [IMG, {"type": "text", "text": "q"}]}], None, vtok)
    # "\n\nTask" is one "\n\n" token then "Task"; with the image it is "\n\n" <|image|> " Task"
    assert with_image.head[:5] == text_only.head[:5] and with_image.head[5] == 128256
    assert vtok.decode(with_image.head[6:]) == " " + vtok.decode(text_only.head[5:])
    assert with_image.body == text_only.body


def test_image_token_in_text_is_plain_text(vtok):
    p = encode([{"role": "user", "content": [IMG, {"type": "text", "text": "<|image|> again"}]}], None, vtok)
    assert p.ids.count(128256) == 1  # only the template's; the user's spelling is ordinary text


def test_image_in_the_response_turn_also_marks_the_prompt():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [IMG, {"type": "text", "text": "look"}]}]
    assert render(msgs).startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|> Task")


def test_two_images_refused():
    two = [{"role": "user", "content": [IMG, {"type": "text", "text": "a"}]},
           {"role": "assistant", "content": [IMG, {"type": "text", "text": "b"}]}]
    with pytest.raises(GuardError, match="one image"):
        render(two)


def test_text_tokenizer_without_image_token_is_refused(tokenizer):
    with pytest.raises(GuardError, match="<\\|image\\|>"):
        encode(PROMPT, None, tokenizer)


def test_with_image_part_puts_the_image_in_the_first_user_turn():
    from guard.format.prompt import Message
    from guard.vision.classifier import with_image_part

    for first in ("q", [{"type": "text", "text": "q"}], Message("user", "q")):
        msgs = with_image_part([{"role": "user", "content": first} if not isinstance(first, Message) else first,
                                {"role": "assistant", "content": "a"}])
        assert render(msgs) == card("Agent", "User: q\n\nAgent: a\n\n")
    already = [{"role": "user", "content": [{"type": "text", "text": "q"}, IMG]}]
    assert with_image_part(already) == already
