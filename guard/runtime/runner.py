"""The runner interface shared by the eager (transformers) and ExecuTorch backends.

A runner owns one KV cache. ``prefill(tokens, start_pos)`` writes positions ``start_pos ..`` and returns the
logits of the last position (a 1-D float array: numpy from PteRunner, torch from EagerRunner; callers use only
``argmax()`` and indexing); positions below ``start_pos`` keep whatever was last written there, which is what
makes prefix caching work. Logits cover ``output_ids`` (the pruned output vocabulary) or the full vocabulary.
"""

from __future__ import annotations

from typing import Any, Protocol


class Runner(Protocol):
    max_seq_len: int
    output_ids: list[int] | None  # logit column -> token id; None means the full vocabulary
    name: str

    def prefill(self, tokens: list[int], start_pos: int) -> Any: ...

    def decode(self, token: int, pos: int) -> Any: ...


def column(runner: Runner, token_id: int) -> int | None:
    """Logit column of ``token_id`` for this runner (None when pruned away)."""
    if runner.output_ids is None:
        return token_id
    index = getattr(runner, "_column_index", None)
    if index is None:
        index = {t: i for i, t in enumerate(runner.output_ids)}
        runner._column_index = index
    return index.get(token_id)
