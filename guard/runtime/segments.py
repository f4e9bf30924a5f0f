"""Segment checks: a prompt is also judged cut short at its sentence and line ends (issue 18).

A harmful request followed by other text is judged by the model as a whole, and the model answers for the last
request it sees: fake ``Agent:``/``User:`` turns typed into the message, or "...? Then, separately, list three
fruits", pass a harmful request as safe. So when a prompt (the User role) that fits the model is not judged unsafe
as a whole, the guard also judges it cut at up to ``checks`` of its *ends* (a line break, or ``.``, ``?`` or ``!``
followed by whitespace), and the most unsafe cut that is judged unsafe becomes the verdict.

- Only the last message is cut; earlier turns stay as they are. Responses are judged whole (``moderate_stream``
  already checks a response's prefixes), and so are conversations with an image and long inputs
  (guard.runtime.long judges those by windows).
- With more ends than checks, the cuts are spread over the text: the ``j * n // checks``-th end for j < checks.
- The cuts share the policy head and the text before them with the whole prompt, so the runner's prefix cache
  computes each cut's new tokens and the closing template only.
- ``Verdict.segments`` records what was checked: ``{"checked": n, "chosen": i or None, "p_unsafe": [...]}``; empty
  when no cut was judged. ``checks=0`` turns the checks off.

The native library (android_runner/guard/segments.cpp) makes the same cuts and the same choice.
"""

from __future__ import annotations

from guard.format.prompt import Message, as_dicts
from guard.format.verdict import UNSAFE

DEFAULT_CHECKS = 4
SPACE = " \t\r\n"


def ends(text: str, checks: int = DEFAULT_CHECKS) -> list[str]:
    """The cuts of ``text`` to judge: its stripped prefixes ending at a line break or a sentence end, shortest first."""
    whole, cuts = text.strip(), []
    for i in range(1, len(text)):
        if text[i] == "\n" or (text[i] in SPACE and text[i - 1] in ".?!"):
            cut = text[:i].strip()
            if cut and cut != whole and (not cuts or cuts[-1] != cut):
                cuts.append(cut)
    if len(cuts) > checks:
        cuts = [cuts[j * len(cuts) // checks] for j in range(checks)]
    return cuts


def check_segments(guard, msgs: list[Message], verdict, checks: int):
    """``verdict`` (the whole prompt's, not unsafe), or the most unsafe unsafe cut's verdict, with ``segments`` set."""
    if checks <= 0 or msgs[-1].role != "user" or any(m.image for m in msgs):
        return verdict
    convo = as_dicts(msgs)
    cuts = ends(convo[-1]["content"], checks)
    if not cuts:
        return verdict
    best, scores = None, []
    for i, cut in enumerate(cuts):
        v = guard.classify(convo[:-1] + [{"role": "user", "content": cut}], segments=False)
        scores.append(round(v.p_unsafe, 4))
        if v.decision == UNSAFE and (best is None or v.p_unsafe > best[1].p_unsafe):
            best = (i, v)
    chosen = verdict if best is None else best[1]
    chosen.segments = {"checked": len(cuts), "chosen": None if best is None else best[0], "p_unsafe": scores}
    chosen.prompt_tokens = verdict.prompt_tokens
    return chosen
