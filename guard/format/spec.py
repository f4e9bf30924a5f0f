"""guard_format.json: the Llama Guard prompt template and category texts, for runtimes that are not Python.

The native runtime (android_runner/: C++ core, C API, JNI) renders the prompt from this file, written beside the
.pte by ``guard export`` and ``guard mini build``; the Python runtime assembles from the very same pieces
(guard.format.prompt.HEAD/BODY/TURN/CATEGORY_LINE), so the template exists once, in guard/format/prompt.py.
A file written by another version of the template is refused by both runtimes (``check``).

For a .pte exported before this file existed::

    python -m guard.format.spec path/to/model.pte     # writes path/to/guard_format.json
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

from guard.errors import GuardError
from guard.fsutil import write_atomic

SPEC = "guard-format-1"
FILE = "guard_format.json"


def spec() -> dict:
    """Everything the native runtime needs to render prompts and read verdicts exactly as guard.format does."""
    from guard.format import prompt
    from guard.format.categories import DEFAULT_CODES, TEMPLATE_CATEGORIES, official_name
    from guard.format.tokenizer import BOS, END_HEADER, EOT, START_HEADER, llama3_special_tokens
    from guard.runtime.classifier import MAX_CATEGORY_TOKENS

    return {
        "spec": SPEC,
        "prompt_format": prompt.FORMAT_VERSION,
        "special": {"bos": BOS, "start_header": START_HEADER, "end_header": END_HEADER, "eot": EOT},
        "head": [list(s) for s in prompt.HEAD],
        "body": [list(s) for s in prompt.BODY],
        "category_line": prompt.CATEGORY_LINE,
        "turn": prompt.TURN,
        "roles": dict(prompt.ROLES),
        "categories": [{"code": c.code, "name": c.name, "official_name": official_name(c.code)}
                       for c in TEMPLATE_CATEGORIES],
        "default_codes": list(DEFAULT_CODES),
        # str.strip()'s whitespace (message text and the model's output are stripped with it)
        "whitespace": list(_whitespace()),
        "max_text_chars": prompt.MAX_TEXT_CHARS,
        "max_category_tokens": MAX_CATEGORY_TOKENS,
        "llama3_special_tokens": llama3_special_tokens(),  # for a tiktoken tokenizer.model (ids 128000..)
    }


@lru_cache(maxsize=1)
def _whitespace() -> tuple[int, ...]:
    return tuple(c for c in range(0x110000) if chr(c).isspace())  # ~0.1 s: once per process (PteRunner checks)


def _dir(model: str | Path) -> Path:
    p = Path(model)
    return p if p.is_dir() else p.parent


def write(model: str | Path) -> Path:
    """Write guard_format.json into ``model`` (a directory) or beside it (a .pte)."""
    return write_atomic(_dir(model) / FILE, json.dumps(spec(), indent=1, ensure_ascii=True) + "\n")


def check(model: str | Path) -> bool:
    """False when there is no guard_format.json; GuardError when it differs from this version's template."""
    path = _dir(model) / FILE
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GuardError(f"{path} is not valid JSON ({e}); rewrite it with `python -m guard.format.spec {path.parent}`") from None
    if data != spec():
        raise GuardError(f"{path} holds another prompt template than this version of guard; rewrite it with "
                         f"`python -m guard.format.spec {path.parent}`")
    return True


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m guard.format.spec MODEL.pte|DIR  (writes guard_format.json beside the model)", file=sys.stderr)
        return 2
    if not Path(argv[0]).exists():
        print(f"guard: error: {argv[0]} not found", file=sys.stderr)
        return 2
    print(write(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
