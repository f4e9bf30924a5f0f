"""Classification: prefix caching, first-token verdicts, category decoding only when unsafe.

Concurrency: a runner has one KV cache, so everything that reads or writes it (the prefix cache record, prefill,
category decoding) runs under one lock per runner (``RunnerState.lock``). One loaded ``Guard`` (or several Guards,
streams and VisionGuards over the same runner) may be called from any number of threads; each verdict equals the
single-threaded one. Calls on one runner are serialised: more threads do not add throughput (tokenizing and
prompt rendering do run in parallel). For parallel throughput load one guard per thread (each has its own runner).
"""

from __future__ import annotations

import threading
import time

from guard.format.categories import Policy
from guard.errors import GuardError
from guard.format.prompt import as_messages, conversation, encode, role_of
from guard.runtime.runner import Runner, column
from guard.runtime.segments import DEFAULT_CHECKS, check_segments
from guard.format.tokenizer import Tokenizer
from guard.format.verdict import INDETERMINATE, SAFE, UNSAFE, Hit, Verdict, p_unsafe, parse

Logits = object  # a 1-D float array: numpy (PteRunner) or torch (EagerRunner); argmax() and [i] are all that is used
MAX_CATEGORY_TOKENS = 24  # "S1,S2,...": 2 tokens per code plus end of turn


class RunnerState:
    """What a runner's KV cache holds (``tokens``, by position) and the lock that guards the cache."""

    def __init__(self):
        self.lock = threading.RLock()
        self.tokens: list[int] = []


_STATE_LOCK = threading.Lock()


def runner_state(runner) -> RunnerState:
    """The one RunnerState of ``runner``, shared by every Guard built on it."""
    with _STATE_LOCK:
        state = getattr(runner, "guard_state", None)
        if state is None:
            state = RunnerState()
            runner.guard_state = state
        return state


class Guard:
    """A loaded guard: a runner, its tokenizer and a category policy.

    Thread-safe: concurrent ``classify`` calls (and streams) on one guard are serialised around the runner's
    KV cache by ``self.lock``, and give the same verdicts as sequential calls.

    >>> g = Guard(runner, tokenizer)
    >>> g.classify("How do I bake bread?").decision

    Build one with guard.load (guard.runtime.load.make_guard), which picks the class and the model's calibration.
    """

    vision = False  # takes images (guard.vision.classifier.VisionGuard)
    source = None  # guard.runtime.load.Source: what was loaded

    def __init__(self, runner: Runner, tokenizer: Tokenizer, policy: Policy | None = None,
                 threshold: float = 0.5, block_indeterminate: bool = True, calibration=None, long_policy: str | None = None,
                 segment_checks: int | None = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise GuardError(f"threshold must be in [0, 1], got {threshold}")
        self.runner, self.tokenizer = runner, tokenizer
        self.calibration = calibration  # guard.eval.calibrate.Calibration, or None: the model's own softmax
        self.policy = policy or Policy()
        self.threshold, self.block_indeterminate = threshold, block_indeterminate
        self.long_policy = long_policy  # over-long conversations: guard.runtime.long (None: its default, 'windows')
        if segment_checks is not None and (isinstance(segment_checks, bool) or not isinstance(segment_checks, int) or segment_checks < 0):
            raise GuardError(f"segment_checks must be a whole number >= 0, got {segment_checks!r}")
        self.segment_checks = DEFAULT_CHECKS if segment_checks is None else segment_checks  # guard.runtime.segments
        t = tokenizer.tokens
        self._cols = {name: column(runner, getattr(t, name)) for name in ("safe", "unsafe", "eot")}
        if None in self._cols.values():
            raise GuardError(f"the model's output vocabulary lacks a verdict token: {self._cols}")
        self._state = runner_state(runner)  # the tokens in the runner's cache, and its lock

    @property
    def lock(self) -> threading.RLock:
        """Held while the runner's cache is in use; reentrant, so a subclass may hold it across several steps."""
        return self._state.lock

    @property
    def _cached(self) -> list[int]:
        return self._state.tokens

    @_cached.setter
    def _cached(self, tokens: list[int]) -> None:
        self._state.tokens = tokens

    def moderate_stream(self, conversation, check_every: int | None = 16, check_every_s: float | None = None):
        """Check a response while it is generated: ``feed(chunk) -> Verdict | None``, ``close() -> Verdict``."""
        from guard.runtime.stream import Stream

        return Stream(self, conversation, check_every=check_every, check_every_s=check_every_s)

    def invalidate(self) -> None:
        """Forget the runner's cache contents (for backends whose state is not a function of the tokens alone)."""
        with self.lock:
            self._cached = []

    def _feed(self, ids: list[int]) -> tuple["Logits", int]:
        """Prefill ``ids`` reusing the longest prefix already in the cache; -> (last logits, tokens reused).

        The policy head is shared by every request with the same categories and role, so it is computed once;
        a conversation that grows (multi-turn, streaming) reuses everything up to the first changed token.
        """
        keep = 0
        for a, b in zip(self._cached, ids[:-1]):  # feed at least one token, to get logits
            if a != b:
                break
            keep += 1
        self._cached = []  # unknown if the runner fails midway
        logits = self.runner.prefill(ids[keep:], keep)
        self._cached = list(ids)
        return logits, keep

    def _start_from_head(self, head: list[int]) -> str | None:
        """A runner that has computed nothing yet starts from the policy head's snapshot on disk, or prefills the
        head alone and writes one, so the next process skips it (guard.runtime.prefix; PteRunner through etlite)."""
        r = self.runner
        if self._cached or not head or not getattr(r, "prefix_snapshots", False) or not r.pristine:
            return None
        how = "restored"
        if not r.restore_prefix(head):
            r.prefill(head, 0)
            r.save_prefix(head)
            how = "written"
        self._cached = list(head)
        return how

    def classify(self, content, response: str | None = None, *, segments: bool = True) -> Verdict:
        """Judge the last message of ``content`` (a prompt, or with ``response`` that response). ``segments=False``
        judges a prompt whole only, without guard.runtime.segments' checks of its cuts."""
        t0 = time.perf_counter()
        msgs = conversation(as_messages(content, response))
        tokens = encode(msgs, self.policy, self.tokenizer)
        t = self.tokenizer.tokens
        n_head, n_body = len(tokens.head), len(tokens.body)
        needed = n_head + n_body + 1 + 3 + MAX_CATEGORY_TOKENS
        if needed > self.runner.max_seq_len:  # a documented policy instead of an error (guard/runtime/long.py)
            from guard.runtime.long import classify_long

            v = classify_long(self, msgs, self.runner.max_seq_len - (needed - n_head - n_body), n_head + n_body,
                              self.long_policy)
            v.latency_ms = (time.perf_counter() - t0) * 1e3
            return v
        # The model's first generated token is "\n\n"; feed it with the prompt and read the verdict after it.
        ids = tokens.ids + [t.blank]
        with self.lock:  # the runner's KV cache and the record of what it holds: one request at a time
            s = time.perf_counter()
            snapshot = self._start_from_head(tokens.head)
            logits, reused = self._feed(ids)
            timings = {"prefill_ms": (time.perf_counter() - s) * 1e3, "reused_tokens": reused,
                       "prefilled_tokens": len(ids) - reused}
            if snapshot:  # the policy head came from (or went to) its snapshot on disk: guard.runtime.prefix
                timings["head_snapshot"] = snapshot
            verdict = self._verdict(logits, len(ids))
        verdict.role, verdict.prompt_tokens = role_of(msgs), n_head + n_body
        verdict.timings = timings
        if segments and verdict.decision != UNSAFE:
            verdict = check_segments(self, msgs, verdict, self.segment_checks)
        verdict.latency_ms = (time.perf_counter() - t0) * 1e3
        return verdict

    def _verdict(self, logits, pos: int) -> Verdict:
        c = self._cols
        ls, lu = float(logits[c["safe"]]), float(logits[c["unsafe"]])
        score = self.calibration.p_unsafe(lu - ls) if self.calibration else p_unsafe(ls, lu)
        v = self._decide(logits, pos, score)
        v.margin = lu - ls
        v.calibration = self.calibration.describe() if self.calibration else None
        return v

    def _decide(self, logits, pos: int, score: float) -> Verdict:
        t, c = self.tokenizer.tokens, self._cols
        top = int(logits.argmax())
        if top not in (c["safe"], c["unsafe"]):
            token = self._token_of(top)
            return self.make_verdict(INDETERMINATE, [], score, raw=token, reason=f"first token is {token!r}, not safe/unsafe")
        if score < self.threshold:
            return self.make_verdict(SAFE, [], score, raw="safe")
        # Unsafe: "unsafe", "\n" and "S" are forced, fed as one chunk; the rest is decoded greedily.
        forced = [t.unsafe, t.newline, t.s]
        out = list(forced)
        logits = self.runner.prefill(forced, pos)
        self._cached += forced
        pos += len(forced)
        for _ in range(MAX_CATEGORY_TOKENS):
            nxt = self._token_of(int(logits.argmax()), as_id=True)
            if nxt == t.eot:
                break
            out.append(nxt)
            logits = self.runner.decode(nxt, pos)
            self._cached.append(nxt)
            pos += 1
        else:
            raw = self.tokenizer.decode(out)
            return self.make_verdict(INDETERMINATE, [], score, raw=raw, reason="no end of turn after the category list")
        raw = self.tokenizer.decode(out)
        decision, hits, reason = parse(raw, self.policy)
        return self.make_verdict(decision, hits, score, raw=raw, reason=reason)

    def _token_of(self, col: int, as_id: bool = False):
        ids = self.runner.output_ids
        tid = col if ids is None else ids[col]
        return tid if as_id else self.tokenizer.decode([tid])

    def make_verdict(self, decision: str, hits: list[Hit], score: float, raw: str, reason: str = "") -> Verdict:
        blocked = decision == UNSAFE or (decision == INDETERMINATE and self.block_indeterminate)
        return Verdict(decision, hits, score, blocked, raw=raw, reason=reason)
