"""Labelled examples as the dataset readers make them (guard.train.data, guard.train.sources share these)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Example:
    messages: tuple  # ((role, text), ...)
    label: str
    categories: tuple[str, ...]
    source: str
    adjacent: bool = False


def prompt(text: str, label: str, cats=(), source: str = "", adjacent: bool = False) -> Example:
    return Example((("user", text),), label, tuple(sorted(set(cats), key=lambda c: int(c[1:]))), source, adjacent)


def response(prompt: str, response: str, label: str, cats=(), source: str = "") -> Example:
    return Example((("user", prompt), ("assistant", response)), label, tuple(sorted(set(cats), key=lambda c: int(c[1:]))), source)


def read_rows(path: Path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
