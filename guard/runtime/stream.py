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
- a response longer than a message may be (``guard.format.prompt.MAX_TEXT_CHARS`` characters, whitespace
  included) ends the stream the same way, as soon as it is fed;
- bytes may be fed: an incremental UTF-8 decoder holds back a split multi-byte character until it completes. A
  ``str`` chunk while such a character is incomplete is a ``GuardError`` (the text would otherwise be reordered);
  anything but ``str``/``bytes`` is a ``GuardError`` too;
- ``feed`` after ``close`` is a ``GuardError`` (a closed stream is finished); ``close`` again returns the same verdict.

Threads: a stream's own state is guarded by a lock, and its checks go through ``Guard.classify``, which holds the
runner's lock, so streams and plain ``classify`` calls on one guard may run in different threads.
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass, field

from guard.errors import GuardError, SequenceTooLong
from guard.format.prompt import MAX_TEXT_CHARS, as_messages
from guard.format.prompt import conversation as validate
from guard.format.verdict import INDETERMINATE, UNSAFE, Verdict


@dataclass
class StreamStats:
    checks: int = 0
    prefilled_tokens: int = 0  # tokens run through the model by all checks
    reused_tokens: int = 0  # tokens served from the cache instead
    # (new response tokens since the previous check, tokens prefilled by this check)
    per_check: list = field(default_factory=list)


class Stream:
    def __init__(self, guard, conversation, check_every: int | None = 16, check_every_s: float | None = None):
        if not isinstance(conversation, (str, list, tuple)):
            raise GuardError(f"a stream answers a prompt string or a list of messages, not {type(conversation).__name__}")
        msgs = as_messages(conversation) if isinstance(conversation, str) else list(conversation)
        for name, value in (("check_every", check_every), ("check_every_s", check_every_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise GuardError(f"{name} must be a number, not {type(value).__name__}")
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
        self.closed = False
        self._lock = threading.RLock()

    def feed(self, chunk: str | bytes) -> Verdict | None:
        """Add generated text; returns a verdict when a check ran (or the final one), else None."""
        if isinstance(chunk, (bytearray, memoryview)):
            chunk = bytes(chunk)
        if not isinstance(chunk, (str, bytes)):
            raise GuardError(f"feed() takes str or bytes, not {type(chunk).__name__}")
        with self._lock:
            if self.closed:
                raise GuardError("feed() after close(): the stream is finished; start a new one with moderate_stream()")
            if self.final:
                return self.verdict
            if isinstance(chunk, bytes):
                try:
                    chunk = self._decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    raise GuardError(f"streamed bytes are not valid UTF-8: {e.reason}") from None
            elif self._decoder.getstate()[0]:
                raise GuardError("a str chunk arrived while earlier bytes end inside a UTF-8 character; feed the rest "
                                 "of that character as bytes first (mixing would reorder the text)")
            self.text += chunk
            if len(self.text) > MAX_TEXT_CHARS:
                return self._too_long(f"{len(self.text)} characters, more than the {MAX_TEXT_CHARS} a message may have")
            if not self.text.strip():
                return None
            n = len(self.guard.tokenizer.encode(self.text))
            due_tokens = self.check_every is not None and n - self._checked_tokens >= self.check_every
            due_time = self.check_every_s is not None and time.monotonic() - self._last_time >= self.check_every_s
            return self._check(n) if due_tokens or due_time else None

    def close(self) -> Verdict:
        """The verdict for the whole response. No new text since the last check: that check's verdict."""
        with self._lock:
            if self.final:
                self.closed = True
                return self.verdict
            try:
                self.text += self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise GuardError("the stream ended inside a multi-byte UTF-8 character") from None
            if not self.text.strip():
                raise GuardError("empty response: nothing to classify")
            v = self.verdict if self.text == self._checked_text else self._check(len(self.guard.tokenizer.encode(self.text)))
            self.final = self.closed = True
            return v

    def _too_long(self, why: str) -> Verdict:
        v = self.guard.make_verdict(INDETERMINATE, [], self.verdict.p_unsafe if self.verdict else 0.5, raw="",
                                    reason=f"response too long to check ({why})")
        v.role = "Agent"
        self.final = True
        self.verdict = v
        return v

    def _check(self, n_tokens: int) -> Verdict:
        msgs = self.messages + [{"role": "assistant", "content": self.text}]
        try:
            v = self.guard.classify(msgs)
        except SequenceTooLong as e:
            v = self._too_long(f"{n_tokens} tokens: {e}")
        if v.truncation and v.decision != UNSAFE:  # guard.runtime.long judged only part of it: not a pass
            v = self._too_long(f"{n_tokens} tokens: the conversation needs more than the model's maximum of "
                               f"{self.guard.runner.max_seq_len} positions")
        self.stats.checks += 1
        self.stats.prefilled_tokens += v.timings.get("prefilled_tokens", 0)
        self.stats.reused_tokens += v.timings.get("reused_tokens", 0)
        self.stats.per_check.append((n_tokens - self._checked_tokens, v.timings.get("prefilled_tokens", 0)))
        self._checked_tokens, self._checked_text, self._last_time = n_tokens, self.text, time.monotonic()
        self.verdict = v
        if v.decision == UNSAFE:
            self.final = True
        return v
