"""Typed verdicts, the classifier score, and parsing of the model's generated text."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from guard.format.categories import Policy, official_name

SAFE, UNSAFE, INDETERMINATE = "safe", "unsafe", "indeterminate"


@dataclass(frozen=True)
class Hit:
    code: str  # stable code, e.g. "S10", whatever key the model saw
    name: str


@dataclass
class Verdict:
    decision: str  # "safe" | "unsafe" | "indeterminate"
    categories: list[Hit]
    p_unsafe: float  # softmax over the first verdict token's "safe"/"unsafe" logits, calibrated when the model has one
    blocked: bool  # unsafe, or indeterminate under the default blocking policy
    role: str = "User"  # "User" (prompt classification) or "Agent" (response classification)
    raw: str = ""  # generated text as decoded (after the forced leading newline)
    reason: str = ""  # why the verdict is indeterminate
    prompt_tokens: int = 0
    latency_ms: float = 0.0
    timings: dict = field(default_factory=dict)
    margin: float = 0.0  # raw log-odds logit(unsafe) - logit(safe), before calibration (guard.eval.calibrate)
    calibration: dict | None = None  # {"a", "b", "sha256"} of the calibration that scored p_unsafe; None: raw softmax
    truncation: dict = field(default_factory=dict)  # set when the input was longer than the model (guard.runtime.long)
    segments: dict = field(default_factory=dict)  # set when cuts of the prompt were judged too (guard.runtime.segments)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["categories"] = [asdict(h) for h in self.categories]
        return d

    def summary(self) -> str:
        """One line for people: decision, categories, score, role, latency, and why when indeterminate."""
        cats = ", ".join(f"{h.code} {h.name}" for h in self.categories)
        line = self.decision.upper() + (f"  [{cats}]" if cats else "")
        line += f"  p_unsafe={self.p_unsafe:.4f}  role={self.role}  {self.latency_ms:.0f} ms"
        if self.reason:
            line += f"  ({self.reason}; {'blocked' if self.blocked else 'passed'})"
        return line


def p_unsafe(logit_safe: float, logit_unsafe: float) -> float:
    """Two-way softmax, computed stably."""
    d = logit_safe - logit_unsafe
    return 1.0 / (1.0 + math.exp(d)) if d > -700 else 1.0


def parse(text: str, policy: Policy) -> tuple[str, list[Hit], str]:
    """Parse 'safe' or 'unsafe\\nS1,S2' (surrounding whitespace allowed). Anything else is indeterminate."""
    lines = [ln.strip() for ln in text.strip().split("\n")]
    if lines == [SAFE]:
        return SAFE, [], ""
    if not lines or lines[0] != UNSAFE:
        return INDETERMINATE, [], f"unparseable output {text.strip()[:60]!r}"
    if len(lines) != 2 or not lines[1]:
        return INDETERMINATE, [], f"'unsafe' without a category line: {text.strip()[:60]!r}"
    hits = []
    for key in (k.strip() for k in lines[1].split(",")):
        cat = policy.lookup(key)
        if cat is None:
            return INDETERMINATE, [], f"model named a category not in the policy: {key[:20]!r}"
        hit = Hit(cat.code, official_name(cat.code) if not cat.description else cat.name)
        if hit not in hits:
            hits.append(hit)
    return UNSAFE, hits, ""
