"""The bench prompts as token ids, for runners that have no tokenizer (android_runner's C++ guard_runner).

`guard bench --device` writes ``guard_prompts.txt`` beside the pushed model.pte. It holds exactly the token ids that
guard.bench.host feeds for each message length, so the C++ runner makes the same calls as the host runner:

    format guard-prompts-1
    warm <ids>          # the 8-token message that fills the policy head cache
    first N <ids>       # guard prompt + "\\n\\n" for a message of N tokens, on an empty cache
    second N <ids>      # another message of N tokens ("x " + N-1 tokens): only the head is reused
    text warm <json>    # the message texts themselves (a JSON string each): a runner built with the native
    text first N <json> #   core (android_runner/guard/) tokenizes and renders them on the device, from
    text second N <json>#   tokenizer.json and guard_format.json, and checks that it gets the ids above

One line per entry, ids separated by spaces. ``python -m guard.bench.prompts --tokenizer DIR --prompt-tokens 16,40
--out guard_prompts.txt`` writes it by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMAT = "guard-prompts-1"
NAME = "guard_prompts.txt"


def prompt_ids(tok, text: str) -> list[int]:
    """What Guard.classify feeds the runner for ``text`` with an empty cache: the prompt and the "\\n\\n" token."""
    from guard.format.prompt import as_messages, conversation, encode

    return encode(conversation(as_messages(text)), None, tok).ids + [tok.tokens.blank]


def bench_texts(tok, lengths: list[int]) -> dict:
    from guard.bench.host import message

    return {"warm": message(tok, 8), "first": {n: message(tok, n) for n in lengths},
            "second": {n: "x " + message(tok, n - 1) for n in lengths}}


def bench_prompts(tok, lengths: list[int]) -> dict:
    t = bench_texts(tok, lengths)
    return {"warm": prompt_ids(tok, t["warm"]), "first": {n: prompt_ids(tok, x) for n, x in t["first"].items()},
            "second": {n: prompt_ids(tok, x) for n, x in t["second"].items()}, "texts": t}


def render(p: dict) -> str:
    import json

    ids = lambda xs: " ".join(map(str, xs))
    lines = [f"format {FORMAT}", f"warm {ids(p['warm'])}"]
    for n in p["first"]:
        lines += [f"first {n} {ids(p['first'][n])}", f"second {n} {ids(p['second'][n])}"]
    if "texts" in p:
        t = p["texts"]
        lines.append(f"text warm {json.dumps(t['warm'])}")
        for n in t["first"]:
            lines += [f"text first {n} {json.dumps(t['first'][n])}", f"text second {n} {json.dumps(t['second'][n])}"]
    return "\n".join(lines) + "\n"


def write(tok, lengths: list[int], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render(bench_prompts(tok, lengths)))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guard.bench.prompts", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="directory with tokenizer.json (e.g. the export's output dir)")
    p.add_argument("--prompt-tokens", default="16,40,128,256")
    p.add_argument("--out", default=NAME)
    a = p.parse_args(argv)
    from guard.format.tokenizer import Tokenizer

    write(Tokenizer.from_dir(a.tokenizer), [int(x) for x in a.prompt_tokens.split(",")], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
