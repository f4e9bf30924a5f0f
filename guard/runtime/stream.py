"""Streaming moderation: check a response while it is generated, paying for the new tokens only.

Each check classifies the conversation with the response so far, through ``Guard.classify``, which reuses the
longest token prefix already in the runner's KV cache. The policy head and the response up to the last check are
never recomputed; a check prefills the response tokens added since the last check (plus the one or two tokens
whose BPE merge changed at the cut) and the ~57-token instruction suffix, which was written after the end of the
response and is overwritten by the next chunk. The verdict is therefore exactly the verdict of a from-scratch
classification of the same prefix.

Policies:
- after an unsafe verdict the stream is final: ``feed`` returns that verdict again without compute;
- a response that outgrows the model's maximum sequence length ends the stream with an ``indeterminate`` verdict
  (reason "response too long ...", blocked by default) instead of raising;
- bytes may be fed: an incremental UTF-8 decoder holds back a split multi-byte character until it completes.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass

from guard.errors import GuardError, SequenceTooLong
from guard.format.prompt import as_messages
from guard.format.prompt import conversation as validate
from guard.format.verdict import INDETERMINATE, UNSAFE, Verdict


@dataclass
class StreamStats:
    checks: int = 0
    prefilled_tokens: int = 0  # tokens run through the model by all checks
    reused_tokens: int = 0  # tokens served from the cache instead
    per_check: list = None  # (new response tokens since the previous check, tokens prefilled by this check)

    def __post_init__(self):
        self.per_check = []


class Stream:
    def __init__(self, guard, conversation, check_every: int | None = 16, check_every_s: float | None = None):
        msgs = as_messages(conversation) if isinstance(conversation, str) else list(conversation)
        if validate(msgs)[-1].role != "user":  # one-line errors now, not at the first check
            raise GuardError("a streamed response answers a conversation that ends with a user turn")
        if check_every is None and check_every_s is None:
            raise GuardError("give check_every (tokens) or check_every_s (seconds)")
        if check_every is not None and check_every < 1:
            raise GuardError("check_every must be at least 1 token")
        if check_every_s is not None and not check_every_s > 0:
            raise GuardError(f"check_every_s must be a positive number of seconds, got {check_every_s}")
        self.guard, self.messages = guard, msgs
        self.check_every, self.check_every_s = check_every, check_every_s
        self.text = ""
        self.verdict: Verdict | None = None  # the latest verdict
        self.final = False
        self.stats = StreamStats()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._checked_tokens = 0  # response tokens at the last check
        self._checked_text = None
        self._last_time = time.monotonic()

    def feed(self, chunk: str | bytes) -> Verdict | None:
        """Add generated text; returns a verdict when a check ran (or the final one), else None."""
        if self.final:
            return self.verdict
        if isinstance(chunk, bytes):
            try:
                chunk = self._decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise GuardError(f"streamed bytes are not valid UTF-8: {e.reason}") from None
        self.text += chunk
        if not self.text.strip():
            return None
        n = len(self.guard.tokenizer.encode(self.text))
        due_tokens = self.check_every is not None and n - self._checked_tokens >= self.check_every
        due_time = self.check_every_s is not None and time.monotonic() - self._last_time >= self.check_every_s
        return self._check(n) if due_tokens or due_time else None

    def close(self) -> Verdict:
        """The verdict for the whole response. No new text since the last check: that check's verdict."""
        if self.final:
            return self.verdict
        try:
            self.text += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise GuardError("the stream ended inside a multi-byte UTF-8 character") from None
        if not self.text.strip():
            raise GuardError("empty response: nothing to classify")
        v = self.verdict if self.text == self._checked_text else self._check(len(self.guard.tokenizer.encode(self.text)))
        self.final = True
        return v

    def _check(self, n_tokens: int) -> Verdict:
        msgs = self.messages + [{"role": "assistant", "content": self.text}]
        try:
            v = self.guard.classify(msgs)
        except SequenceTooLong as e:
            v = self.guard.make_verdict(INDETERMINATE, [], self.verdict.p_unsafe if self.verdict else 0.5, raw="",
                                     reason=f"response too long to check ({n_tokens} tokens): {e}")
            v.role = "Agent"
            self.final = True
        self.stats.checks += 1
        self.stats.prefilled_tokens += v.timings.get("prefilled_tokens", 0)
        self.stats.reused_tokens += v.timings.get("reused_tokens", 0)
        self.stats.per_check.append((n_tokens - self._checked_tokens, v.timings.get("prefilled_tokens", 0)))
        self._checked_tokens, self._checked_text, self._last_time = n_tokens, self.text, time.monotonic()
        self.verdict = v
        if v.decision == UNSAFE:
            self.final = True
        return v
