"""Llama Guard 3 prompt rendering, token for token as the published chat template.

The prompt is built as a list of segments: special tokens are inserted by id and every piece of text
(including all conversation text) is encoded as plain text, so user content cannot forge template tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guard.format.categories import Policy
from guard.errors import GuardError
from guard.format.tokenizer import BOS, END_HEADER, EOT, IMAGE, START_HEADER, Tokenizer

FORMAT_VERSION = "llama-guard-3"
ROLES = {"user": "User", "assistant": "Agent"}
MAX_TEXT_CHARS = 200_000
# Invisible format characters: zero-width space/joiners, left-to-right and right-to-left marks, bidi embeddings,
# overrides and isolates, word joiner and invisible operators, soft hyphen, BOM, Arabic letter mark, Mongolian vowel
# separator. Sprinkled through a request they change its tokens, not what a reader (or the answering model) sees, so
# conversation() drops them and every verdict is on the visible text (the native runtime drops the same set:
# android_runner/guard/format.cpp, invisible()). Unicode tag characters (U+E0000 block) are left alone.
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

TASK = "Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy with the below categories.\n\n"
INSTRUCTION = (
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
)
# The other template pieces. guard/format/spec.py writes all of them to guard_format.json for the native runtime
# (android_runner/), which assembles the prompt from that file: the template is written here only.
CATEGORIES_BEGIN = "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
CATEGORY_LINE = "{key}: {value}\n"
CATEGORIES_END = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
TURN = "{role}: {text}\n\n"
CONVERSATION_END = "<END CONVERSATION>\n\n"
# The prompt's token ids, as segments: a special token by name (GuardTokens field) or text encoded as plain text,
# with {role}, {categories} and {turns} filled in (values are never re-scanned for placeholders).
HEAD = (("special", "bos"), ("special", "start_header"), ("text", "user"), ("special", "end_header"),
        ("text", "\n\n" + TASK + CATEGORIES_BEGIN + "{categories}" + CATEGORIES_END))
BODY = (("text", "{turns}" + CONVERSATION_END + INSTRUCTION), ("special", "eot"), ("special", "start_header"),
        ("text", "assistant"), ("special", "end_header"))


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    text: str  # the first text part
    image: bool = False  # the message carried an image part (vision)
    more: tuple[str, ...] = ()  # further text blocks (conversation() joins a message's parts into ``text``)

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.text,) + self.more


def _text_of(content, where: str) -> tuple[list[str], bool]:
    """A plain string is one text part. In a list, {"type": "text"} parts are the text and {"type": "image"} marks
    an image; any other part type is an error (never silently dropped)."""
    if isinstance(content, str):
        return [content], False
    if not isinstance(content, list):
        raise GuardError(f"{where}: content must be a string or a list of parts")
    texts, image = [], False
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise GuardError(f"{where}: each content part must be an object with a 'type'")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise GuardError(f"{where}: a text part needs a string 'text'")
            texts.append(part["text"])
        elif part["type"] == "image":
            image = True
        else:
            raise GuardError(f"{where}: unknown content part type {str(part['type'])[:40]!r} (expected 'text' or 'image')")
    return texts, image


def as_messages(content, response: str | None = None):
    """A prompt string (plus optional response) or a list of messages -> list of messages."""
    if isinstance(content, str):
        msgs = [{"role": "user", "content": content}]
        if response is not None:
            msgs.append({"role": "assistant", "content": response})
        return msgs
    if response is not None:
        raise GuardError("give a response only together with a single prompt string")
    return content


def as_dicts(msgs: list[Message]) -> list[dict]:
    """Validated Messages back to ``[{"role", "content"}]`` (a message's parts joined by a blank line), to classify a
    changed copy of a conversation (guard.runtime.long's windows, guard.runtime.segments' cuts)."""
    return [{"role": m.role, "content": "\n\n".join(m.parts)} for m in msgs]


def conversation(messages) -> list[Message]:
    """Validate and normalise ``[{"role": ..., "content": ...}, ...]`` (or Message objects)."""
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list) or not messages:
        raise GuardError("a conversation must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(Message(m.role, INVISIBLE.sub("", m.text), m.image, tuple(INVISIBLE.sub("", p) for p in m.more)))
            continue
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise GuardError(f"message {i}: expected an object with 'role' and 'content'")
        texts, image = _text_of(m["content"], f"message {i}")
        if not texts:
            raise GuardError(f"message {i}: no text part")
        # The text parts of one message are one message: rendered as separate "Role:" blocks, only the last one
        # would be judged ("ONLY THE LAST User message"), so harmful text in an earlier part would go unseen.
        out.append(Message(m["role"], INVISIBLE.sub("", "\n".join(texts)), image))
    for i, m in enumerate(out):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role not in ROLES:
            raise GuardError(f"message {i}: role must be 'user' or 'assistant', not {m.role!r}")
        if m.role != expected:
            raise GuardError(f"message {i}: roles must alternate user/assistant starting with user; got {m.role!r}")
        if not "".join(m.parts).strip():
            raise GuardError(f"message {i}: empty text")
        n = sum(len(p) for p in m.parts)
        if n > MAX_TEXT_CHARS:
            raise GuardError(f"message {i}: {n} characters is more than the {MAX_TEXT_CHARS} allowed")
        for p in m.parts:
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:
                raise GuardError(f"message {i}: text is not valid UTF-8 (lone surrogate)") from None
    if sum(m.image for m in out) > 1:
        raise GuardError("at most one image per conversation")
    return out


def role_of(messages: list[Message]) -> str:
    return ROLES[messages[-1].role]


def head_text(policy: Policy, role: str, image: bool = False) -> str:
    """Everything up to and including '<BEGIN CONVERSATION>\\n\\n' (the cacheable prefix)."""
    cats = "".join(CATEGORY_LINE.format(key=key, value=cat.prompt_value) for key, cat in policy.shown)
    return (
        f"{BOS}{START_HEADER}user{END_HEADER}\n\n" + (f"{IMAGE} " if image else "") + TASK.format(role=role)
        + CATEGORIES_BEGIN + cats + CATEGORIES_END
    )


def body_plain(messages: list[Message]) -> str:
    """The body up to the closing ' ' before <|eot_id|>: plain text only."""
    turns = "".join(TURN.format(role=ROLES[m.role], text=p.strip()) for m in messages for p in m.parts)
    return turns + CONVERSATION_END + INSTRUCTION.format(role=role_of(messages))


def body_text(messages: list[Message]) -> str:
    return body_plain(messages) + f"{EOT}{START_HEADER}assistant{END_HEADER}"


def render(messages, policy: Policy | None = None) -> str:
    """The prompt as text, identical to the chat template's output."""
    msgs = conversation(messages)
    policy = policy or Policy()
    return head_text(policy, role_of(msgs), any(m.image for m in msgs)) + body_text(msgs)


@dataclass(frozen=True)
class PromptTokens:
    head: list[int]  # fixed for a (policy, role, image) triple: cacheable
    body: list[int]  # the conversation and the closing instruction

    @property
    def ids(self) -> list[int]:
        return self.head + self.body


def encode(messages, policy: Policy | None, tok: Tokenizer) -> PromptTokens:
    msgs = conversation(messages)
    policy = policy or Policy()
    role, image = role_of(msgs), any(m.image for m in msgs)
    turns = "".join(TURN.format(role=ROLES[m.role], text=p.strip()) for m in msgs for p in m.parts)
    body = assemble(BODY, {"role": role, "turns": turns}, tok)
    return PromptTokens(encode_head(tok, policy, role, image), body)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace {name} placeholders in one pass (a value that spells "{role}" stays as it is)."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def assemble(segments, values: dict[str, str], tok: Tokenizer) -> list[int]:
    ids = []
    for kind, value in segments:
        ids += [getattr(tok.tokens, value)] if kind == "special" else tok.encode(fill(value, values))
    return ids


def encode_head(tok: Tokenizer, policy: Policy, role: str, image: bool = False) -> list[int]:
    """Special tokens by id, all text (category descriptions included) as plain text."""
    if image:  # "\n\n<|image|> Task: ..." (Llama Guard 3 Vision only; not in the native runtime)
        t = tok.tokens
        text = head_text(policy, role, image=False)
        text = text[text.index(END_HEADER) + len(END_HEADER):]
        ids = [t.bos, t.start_header] + tok.encode("user") + [t.end_header]
        return ids + tok.encode("\n\n") + [tok.special_id(IMAGE)] + tok.encode(" " + text[2:])
    cats = "".join(CATEGORY_LINE.format(key=key, value=cat.prompt_value) for key, cat in policy.shown)
    return assemble(HEAD, {"role": role, "categories": cats}, tok)
