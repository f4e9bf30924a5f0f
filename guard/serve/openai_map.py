"""Llama Guard verdicts in OpenAI's moderation shape: the S1-S14 -> OpenAI category mapping (docs/serve.md).

Llama Guard 3 names MLCommons hazard codes; OpenAI's omni-moderation has 13 keys. Each S-code sets the most
specific OpenAI keys it covers, and a set subcategory ("illicit/violent") also sets its parent ("illicit"), as in
OpenAI's own hierarchy. "hate/threatening" is set when Hate (S10) comes together with Violent Crimes (S1).
Codes with no OpenAI key (S5 Defamation, S6 Specialized Advice, S7 Privacy, S8 Intellectual Property,
S13 Elections, S14 Code Interpreter Abuse) set no key: such a result is ``flagged`` with every category false,
and the codes are in its ``llama_guard`` block. Keys no S-code covers (harassment, harassment/threatening,
self-harm/intent, self-harm/instructions) are never set, and their ``category_applied_input_types`` is empty.

Llama Guard gives one probability per input, not one per category: ``category_scores`` carries the calibrated
``p_unsafe`` under the keys the verdict sets and 0.0 under the others.
"""

from __future__ import annotations

OPENAI_KEYS = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)

# S-code -> the most specific OpenAI keys it covers (parents are added by keys_for)
S_TO_OPENAI: dict[str, tuple[str, ...]] = {
    "S1": ("violence", "illicit/violent"),  # Violent Crimes
    "S2": ("illicit",),  # Non-Violent Crimes
    "S3": ("sexual", "illicit/violent"),  # Sex-Related Crimes
    "S4": ("sexual/minors",),  # Child Sexual Exploitation
    "S5": (),  # Defamation
    "S6": (),  # Specialized Advice
    "S7": (),  # Privacy
    "S8": (),  # Intellectual Property
    "S9": ("violence", "illicit/violent"),  # Indiscriminate Weapons
    "S10": ("hate",),  # Hate (+ hate/threatening together with S1)
    "S11": ("self-harm",),  # Suicide & Self-Harm
    "S12": ("sexual",),  # Sexual Content
    "S13": (),  # Elections
    "S14": (),  # Code Interpreter Abuse
}
# the keys OpenAI's schema lets carry "image" in category_applied_input_types (the others are text-only there)
IMAGE_KEYS = frozenset({"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence", "violence/graphic"})
UNMAPPED_CODES = tuple(c for c, keys in S_TO_OPENAI.items() if not keys)
COVERED_KEYS = frozenset(k for keys in S_TO_OPENAI.values() for k in keys) | {"illicit", "hate/threatening"}


def keys_for(codes) -> set[str]:
    """OpenAI keys set by a list of S-codes (custom codes from a category file set none)."""
    keys = {k for c in codes for k in S_TO_OPENAI.get(c, ())}
    if "S10" in codes and "S1" in codes:
        keys.add("hate/threatening")
    keys |= {k.split("/")[0] for k in keys if "/" in k}
    return keys


def moderation_result(verdict: dict, input_types: tuple[str, ...] = ("text",)) -> dict:
    """One ``results[]`` entry from a verdict dict (``Verdict.to_dict()``). ``input_types`` ("text", "image"):
    what was judged; "image" is listed only under the keys OpenAI's schema allows it for (IMAGE_KEYS)."""
    codes = [h["code"] for h in verdict["categories"]]
    keys = keys_for(codes) if verdict["decision"] == "unsafe" else set()
    p = float(verdict["p_unsafe"])
    return {
        "flagged": bool(verdict["blocked"]),
        "categories": {k: k in keys for k in OPENAI_KEYS},
        "category_scores": {k: (p if k in keys else 0.0) for k in OPENAI_KEYS},
        "category_applied_input_types": {k: ([t for t in input_types if t == "text" or k in IMAGE_KEYS]
                                              if k in COVERED_KEYS else []) for k in OPENAI_KEYS},
        "llama_guard": llama_guard_block(verdict),
    }


def llama_guard_block(verdict: dict) -> dict:
    return {
        "decision": verdict["decision"],
        "categories": [{"code": h["code"], "name": h["name"]} for h in verdict["categories"]],
        "p_unsafe": float(verdict["p_unsafe"]),
        "blocked": bool(verdict["blocked"]),
        "role": verdict.get("role", "User"),
        "reason": verdict.get("reason", ""),
        # what was judged besides the whole text: guard.runtime.long's windows, guard.runtime.segments' cuts ({}: none)
        "truncation": verdict.get("truncation") or {},
        "segments": verdict.get("segments") or {},
    }


def guard_text(verdict: dict) -> str:
    """The guard's answer as its own text: 'safe' or 'unsafe\\nS1,S10' (stable codes).

    An indeterminate verdict reads 'unsafe' (no category line) when it is blocked, 'safe' when it passes, so a
    client that parses the first line acts as the server's policy does; the details are in ``llama_guard``."""
    d = verdict["decision"]
    if d == "unsafe":
        return "unsafe\n" + ",".join(h["code"] for h in verdict["categories"])
    if d == "indeterminate" and verdict["blocked"]:
        return "unsafe"
    return "safe"
