"""The MLCommons hazard taxonomy used by Llama Guard 3, and the category policy shown to the model."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from guard.errors import GuardError


@dataclass(frozen=True)
class Category:
    code: str  # stable code reported in verdicts, e.g. "S10"
    name: str  # official MLCommons name, e.g. "Hate"
    description: str = ""  # text shown to the model after the key; defaults to "{name}."

    @property
    def prompt_value(self) -> str:
        return self.description or f"{self.name}."


# Values exactly as in the Llama Guard 3 chat template ("Violent Crimes." ...).
TEMPLATE_CATEGORIES: tuple[Category, ...] = tuple(
    Category(f"S{i}", name)
    for i, name in enumerate(
        [
            "Violent Crimes",
            "Non-Violent Crimes",
            "Sex Crimes",
            "Child Exploitation",
            "Defamation",
            "Specialized Advice",
            "Privacy",
            "Intellectual Property",
            "Indiscriminate Weapons",
            "Hate",
            "Self-Harm",
            "Sexual Content",
            "Elections",
            "Code Interpreter Abuse",
        ],
        start=1,
    )
)
# MLCommons long names where they differ from the short template values.
MLCOMMONS_NAMES = {"S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation", "S11": "Suicide & Self-Harm"}
HAZARDS = {c.code: c for c in TEMPLATE_CATEGORIES}
DEFAULT_CODES = tuple(f"S{i}" for i in range(1, 14))  # 1B and Vision templates
CODES_8B = DEFAULT_CODES + ("S14",)

_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


def official_name(code: str) -> str:
    return MLCOMMONS_NAMES.get(code, HAZARDS[code].name) if code in HAZARDS else code


@dataclass(frozen=True)
class Policy:
    """Which categories the model sees, under which keys.

    ``renumber=False`` reproduces the Hugging Face chat template: excluded keys are dropped and the rest keep
    their codes. ``renumber=True`` reproduces llama-recipes' prompt builder: the shown keys become S1..Sn in order.
    Verdicts always map shown keys back to the stable codes.
    """

    categories: tuple[Category, ...] = tuple(HAZARDS[c] for c in DEFAULT_CODES)
    excluded: tuple[str, ...] = ()
    renumber: bool = False
    _shown: tuple[tuple[str, Category], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        codes = [c.code for c in self.categories]
        if len(set(codes)) != len(codes):
            raise GuardError(f"duplicate category codes in {codes}")
        for code in self.excluded:
            if code not in codes:
                raise GuardError(f"unknown category code to exclude: {code!r} (known: {', '.join(codes)})")
        kept = [c for c in self.categories if c.code not in self.excluded]
        if not kept:
            raise GuardError("every category is excluded; nothing left to check")
        shown = tuple((f"S{i}" if self.renumber else c.code, c) for i, c in enumerate(kept, start=1))
        object.__setattr__(self, "_shown", shown)

    @property
    def shown(self) -> tuple[tuple[str, Category], ...]:
        """(key shown to the model, category) pairs, in prompt order."""
        return self._shown

    def lookup(self, shown_key: str) -> Category | None:
        return next((c for k, c in self._shown if k == shown_key), None)

# A category the policy does not show is reported under the one that covers it (interpreter abuse is a cyber crime).
COVERED_BY = {"S14": "S2"}


def covered_codes(codes: list[str], policy: Policy) -> list[str]:
    """Label codes -> the codes a verdict under ``policy`` reports for them: a code the policy shows stays, one it
    does not show becomes the code that covers it (COVERED_BY) if that is shown, else it is dropped."""
    shown = {c.code for _, c in policy.shown}
    out = []
    for c in codes:
        k = c if c in shown else COVERED_BY.get(c) if COVERED_BY.get(c) in shown else None
        if k and k not in out:
            out.append(k)
    return out


def parse_codes(text: str, allowed=None) -> list[str]:
    allowed = tuple(allowed or HAZARDS)
    codes = [c.strip().upper() for c in text.split(",") if c.strip()]
    if not codes:
        raise GuardError(f"no category codes in {text!r}")
    for c in codes:
        if c not in allowed:
            raise GuardError(f"unknown category code {c!r} (known: {', '.join(allowed)})")
    return codes


def is_file_spec(spec: str) -> bool:
    """A category file must look like one: ``@FILE``, a name ending in .json, or a path with a folder separator.
    Anything else is a list of codes, whatever files the working directory holds (a file named S10 cannot hijack
    ``--categories S10``)."""
    return spec.startswith("@") or spec.lower().endswith(".json") or "/" in spec or os.sep in spec


def load_categories(spec: str) -> tuple[Category, ...]:
    """``spec`` is a comma list of standard codes ("S1,S10,S14") or a JSON file {code: "Name. description"} named
    ``@FILE``, ``FILE.json`` or ``DIR/FILE`` (see is_file_spec)."""
    if is_file_spec(spec):
        spec = spec[1:] if spec.startswith("@") else spec
        path = Path(spec)
        if path.is_dir():
            raise GuardError(f"category file {spec} is a directory")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GuardError(f"category file not found: {spec}") from None
        except OSError as e:
            raise GuardError(f"cannot read category file {spec}: {e.strerror}") from None
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise GuardError(f"category file {spec} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or not data:
            raise GuardError(f"category file {spec} must hold a non-empty JSON object {{code: description}}")
        cats = []
        for code, value in data.items():
            if not isinstance(code, str) or not _CODE_RE.match(code) or not isinstance(value, str) or not value.strip():
                raise GuardError(f"bad category entry {code!r}: codes are like 'S15', values non-empty text")
            name = value.strip().split(".")[0].strip() or code
            cats.append(Category(code, name, value.strip()))
        return tuple(cats)
    return tuple(HAZARDS[c] for c in parse_codes(spec))
