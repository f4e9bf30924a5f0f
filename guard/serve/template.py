"""Read a Llama Guard prompt that a client rendered itself (NeMo Guardrails, llama-stack's llama-guard provider,
LiteLLM ...) back into a conversation and its category list, so the server classifies it with its own template.

Only a single user message holding both the category block and the conversation block is read this way. Turns
are split at "User: " / "Agent: " that start a line after a blank line; the conversation ends at the LAST
"<END CONVERSATION>" (content cannot cut it short)."""

from __future__ import annotations

import re

BEGIN_CATS, END_CATS = "<BEGIN UNSAFE CONTENT CATEGORIES>", "<END UNSAFE CONTENT CATEGORIES>"
BEGIN_CONV, END_CONV = "<BEGIN CONVERSATION>", "<END CONVERSATION>"
_CAT_LINE = re.compile(r"^([A-Z][A-Z0-9_]{0,15}): ?(.*)$")
_TURN = re.compile(r"(?:^|\n\n)(User|Agent): ")


def is_rendered(text: str) -> bool:
    return all(m in text for m in (BEGIN_CATS, END_CATS, BEGIN_CONV, END_CONV))


def parse_rendered(text: str):
    """-> (messages, categories) where categories is a list of (code, text shown to the model).

    Raises ValueError when the conversation block holds no turn."""
    cats_text = text[text.index(BEGIN_CATS) + len(BEGIN_CATS):text.index(END_CATS)]
    cats: list[list[str]] = []
    for line in cats_text.strip("\n").split("\n"):
        m = _CAT_LINE.match(line)
        if m:
            cats.append([m.group(1), m.group(2).strip()])
        elif cats and line.strip():  # a multi-line description (llama-recipes, NeMo's "Should not ..." lists)
            cats[-1][1] += "\n" + line.rstrip()
    start = text.index(BEGIN_CONV) + len(BEGIN_CONV)
    body = text[start:text.rindex(END_CONV)].strip("\n")
    parts = _TURN.split(body)
    # parts: [before, role, text, role, text, ...]
    messages = [{"role": "user" if role == "User" else "assistant", "content": content.strip()}
                for role, content in zip(parts[1::2], parts[2::2])]
    if not messages:
        raise ValueError("the rendered guard prompt has no 'User: ' or 'Agent: ' turn in its conversation block")
    return messages, [(c, d) for c, d in cats]


def policy_for(categories):
    """A guard.Policy for the categories a client rendered; None when they are exactly the default S1-S13."""
    from guard import Policy
    from guard.format.categories import DEFAULT_CODES, HAZARDS, Category

    if not categories:
        return None
    default = [(c, HAZARDS[c].prompt_value) for c in DEFAULT_CODES]
    if list(categories) == default:
        return None
    out = []
    for code, value in categories:
        if code in HAZARDS and value == HAZARDS[code].prompt_value:
            out.append(HAZARDS[code])
        else:
            name = value.split("\n")[0].split(".")[0].strip() or code
            out.append(Category(code, name, value or f"{code}."))
    return Policy(categories=tuple(out))
