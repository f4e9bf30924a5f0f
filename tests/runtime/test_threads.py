"""One loaded guard, many threads (issue 21): every verdict equals the single-threaded one."""

from __future__ import annotations

import random
import threading

import pytest

from guard.runtime.classifier import Guard
from guard.testing import make_checkpoint

pytestmark = pytest.mark.timeout(600)
WORDS = "the a how do I make bomb kill bread cake steal bank robbery phone hello thanks please weather code".split()


def prompts(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
        # prompts and responses: the Guard's prefix cache switches between two policy heads (User/Agent)
        out.append(text if k % 3 else [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}])
    return out


def key(v):
    return v.decision, round(v.p_unsafe, 5), [h.code for h in v.categories], v.raw


def hammer(g, work, threads: int) -> dict:
    """Each thread classifies its own slice of ``work``; -> {index: verdict key}."""
    results, errors, start = {}, [], threading.Barrier(threads)

    def run(items):
        start.wait()
        try:
            for i, content in items:
                results[i] = key(g.classify(content))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    items = list(enumerate(work))
    ts = [threading.Thread(target=run, args=(items[t::threads],)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    return results


@pytest.fixture(scope="module")
def tiny_guard(tmp_path_factory):
    from guard.runtime.eager import EagerRunner

    d = make_checkpoint(tmp_path_factory.mktemp("threads") / "m", seed=5)
    r = EagerRunner(d)
    return Guard(r, r.tokenizer)


def test_8_threads_x_50_equal_the_single_threaded_verdicts(tiny_guard):
    work = prompts(400)
    reference = {i: key(tiny_guard.classify(c)) for i, c in enumerate(work)}
    assert len({r[1] for r in reference.values()}) > 100  # scores differ per prompt: a mix-up would show
    assert hammer(tiny_guard, work, 8) == reference


def test_a_stream_and_classify_calls_on_one_guard_do_not_corrupt_each_other(tiny_guard):
    work = prompts(60, seed=1)
    reference = {i: key(tiny_guard.classify(c)) for i, c in enumerate(work)}
    text = " ".join(random.Random(2).choice(WORDS) for _ in range(120))

    def stream(out):
        s = tiny_guard.moderate_stream("tell me a story", check_every=8)
        for k in range(0, len(text), 7):
            v = s.feed(text[k:k + 7])
            if v is not None:
                out.append(key(v))
        out.append(key(s.close()))

    expected, got, streamed = [], {}, []
    stream(expected)
    t = threading.Thread(target=stream, args=(streamed,))
    t.start()
    got = hammer(tiny_guard, work, 3)
    t.join()
    assert got == reference and streamed == expected


def test_two_guards_on_one_runner_share_the_cache_record(tiny_guard):
    """The prefix-cache record belongs to the runner: two Guards (policies) on one runner stay exact."""
    from guard.format.categories import Policy

    other = Guard(tiny_guard.runner, tiny_guard.tokenizer, Policy(excluded=("S1", "S2")))
    work = prompts(40, seed=3)
    ref_a = [key(tiny_guard.classify(c)) for c in work]
    ref_b = [key(other.classify(c)) for c in work]
    tiny_guard.invalidate()
    mixed = [(key(tiny_guard.classify(c)), key(other.classify(c))) for c in work]
    assert mixed == list(zip(ref_a, ref_b))


@pytest.mark.slow
def test_guard_mini_pte_under_threads():
    """The shipped model, when it is built here (GUARD_HOME): 8 threads x 2 on one .pte guard (slow here: ~1 s a verdict under load)."""
    from guard.defaults import mini_dir

    pte = mini_dir() / "model.pte"
    if not pte.is_file():
        pytest.skip(f"guard-mini is not built at {pte} (guard mini build)")
    import guard

    g = guard.load(pte=str(pte))
    work = prompts(16, seed=4)
    reference = {i: key(g.classify(c)) for i, c in enumerate(work)}
    assert hammer(g, work, 8) == reference
