"""Conversations longer than the model's ``max_seq_len``: a default policy instead of an error (issue 18).

``Guard.classify`` calls ``classify_long`` when the prompt with its verdict does not fit. Policies:

- ``windows`` (default): first keep the latest turns that fit (whole turns, starting at a user turn, the turn being
  judged always kept). If even the turn being judged does not fit alone, classify overlapping windows of it
  (each window as long as fits, stride 3/4 of a window, the last window ending at the end of the text) and keep the
  most unsafe window (highest p_unsafe). For a response, each window is shown after the tail of the user's prompt
  (at most a quarter of the room). The policy head is the same for every window, so the runner's prefix cache
  computes it once.
- ``last_turns``: only the first step; a last turn that does not fit alone is cut to its last tokens that fit.
- ``error``: refuse with a GuardError (the behaviour before issue 18).

The verdict's ``truncation`` records what was applied (policy, turns dropped, windows, the chosen window and every
window's p_unsafe); batch output carries it, since it is part of ``Verdict.to_dict()``.
"""

from __future__ import annotations

from guard.errors import GuardError, SequenceTooLong
from guard.format.prompt import Message, as_dicts, encode

POLICIES = ("windows", "last_turns", "error")
DEFAULT_POLICY = "windows"
MARGIN = 16  # tokens kept free: decode/encode round trips at window edges may add a token or two


def _n_tokens(guard, msgs: list[dict]) -> int:
    t = encode(msgs, guard.policy, guard.tokenizer)
    return len(t.head) + len(t.body)


def _windows(ids: list[int], size: int) -> list[tuple[int, int]]:
    if len(ids) <= size:
        return [(0, len(ids))]
    stride = max(size * 3 // 4, 1)
    starts = list(range(0, len(ids) - size, stride)) + [len(ids) - size]
    return [(s, s + size) for s in starts]


def classify_long(guard, msgs: list[Message], budget: int, total: int, policy: str | None = None):
    """Classify ``msgs`` (validated Messages) whose prompt, ``total`` tokens (head + body), needs more than
    ``budget``, by ``policy``."""
    policy = policy or DEFAULT_POLICY
    if policy not in POLICIES:
        raise GuardError(f"unknown long-input policy {policy!r} (choose from {', '.join(POLICIES)})")
    convo = as_dicts(msgs)
    if policy == "error":
        raise SequenceTooLong(f"conversation needs {total} tokens, more than the model's maximum of {budget} for the "
                              f"prompt; shorten it, or use the 'windows' or 'last_turns' long-input policy")
    last = len(convo) - (2 if convo[-1]["role"] == "assistant" else 1)  # the smallest suffix starting at a user turn
    for start in range(0, last + 1, 2):
        if _n_tokens(guard, convo[start:]) <= budget - MARGIN:
            v = guard.classify(convo[start:], segments=False)
            v.truncation = {"policy": "last_turns", "prompt_tokens": total, "dropped_turns": start}
            v.prompt_tokens = total
            return v
    tail = convo[last:]  # [user] or [user, assistant]: does not fit alone
    tok = guard.tokenizer
    if len(tail) == 2:  # keep at most a quarter of the room for the end of the user's prompt
        empty = _n_tokens(guard, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}])
        room = budget - MARGIN - empty
        user_ids = tok.encode(tail[0]["content"])
        keep = user_ids[-max(room // 4, 1):] if _n_tokens(guard, tail[:1]) > budget // 4 else user_ids
        context = [{"role": "user", "content": tok.decode(keep).strip() or "x"}]
    else:
        context, room = [], budget - MARGIN - _n_tokens(guard, [{"role": "user", "content": "x"}])
    size = room - (len(tok.encode(context[0]["content"])) if context else 0)
    if size < 16:
        raise GuardError(f"max_seq_len leaves {size} tokens for the text: too small to classify windows")
    ids = tok.encode(tail[-1]["content"])
    spans = _windows(ids, size) if policy == "windows" else [(max(len(ids) - size, 0), len(ids))]
    best, scores = None, []
    for i, (a, b) in enumerate(spans):
        text = tok.decode(ids[a:b]).strip() or "x"
        v = guard.classify(context + [{"role": tail[-1]["role"], "content": text}], segments=False)
        scores.append(round(v.p_unsafe, 4))
        if best is None or v.p_unsafe > best[1].p_unsafe:
            best = (i, v)
    i, v = best
    v.truncation = {"policy": policy if policy == "windows" else "last_turns", "prompt_tokens": total,
                    "dropped_turns": last, "windows": len(spans), "window_tokens": size, "chosen_window": i,
                    "chosen_span": list(spans[i]), "window_p_unsafe": scores,
                    "context_tokens": len(tok.encode(context[0]["content"])) if context else 0}
    v.prompt_tokens = total
    return v
