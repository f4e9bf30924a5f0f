"""XNNPACK's packed-weight file (guard.runtime.packed): naming, publishing, pruning, and the runtime reading it."""

import os
import time

import pytest

from guard.runtime import packed


@pytest.fixture()
def home(tmp_path, monkeypatch):
    import guard.defaults

    monkeypatch.setattr(guard.defaults, "HOME", tmp_path)
    monkeypatch.delenv("GUARD_PACKED_CACHE", raising=False)
    return tmp_path


def test_written_under_a_private_name_then_published(home, tmp_path):
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"x" * 100)
    path, final = packed.choose(pte, "etlite-a.so")
    assert final is not None and path.endswith(f".{os.getpid()}.tmp") and not final.exists()
    packed.publish(path, final)  # XNNPACK wrote nothing (an etlite that ignores the path): nothing to publish
    assert not final.exists()
    open(path, "wb").write(b"packed")
    packed.publish(path, final)
    assert final.read_bytes() == b"packed" and not os.path.exists(path)
    assert packed.choose(pte, "etlite-a.so") == (str(final), None)  # later processes map the published file
    packed.discard(str(final), None)  # a failed load never removes a published file
    assert final.exists()
    tmp, _ = packed.choose(pte, "etlite-b.so")
    open(tmp, "wb").write(b"partial")
    packed.discard(tmp, _)
    assert not os.path.exists(tmp)
    assert packed.choose(pte, "etlite-b.so")[1] is not None  # another etlite build: another file
    pte.write_bytes(b"y" * 101)  # a re-exported model: another file
    assert packed.choose(pte, "etlite-a.so")[1] is not None


def test_off_and_too_long(home, tmp_path, monkeypatch):
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"x")
    monkeypatch.setenv("GUARD_PACKED_CACHE", "0")
    assert packed.choose(pte, "b") == (None, None)
    monkeypatch.delenv("GUARD_PACKED_CACHE")
    import guard.defaults

    monkeypatch.setattr(guard.defaults, "HOME", tmp_path / ("d" * 250))
    assert packed.choose(pte, "b") == (None, None)  # XNNPACK's option value holds 255 bytes


def test_prune_keeps_the_newest_and_drops_stale_partial_files(tmp_path):
    now = time.time()
    for i in range(5):
        p = tmp_path / f"{i}.xnnpacked"
        p.write_bytes(b"p")
        os.utime(p, (now - 100 * i, now - 100 * i))
    old, fresh = tmp_path / "a.xnnpacked.1.tmp", tmp_path / "b.xnnpacked.2.tmp"
    for p, age in ((old, packed.STALE_TMP_S + 10), (fresh, 10)):
        p.write_bytes(b"t")
        os.utime(p, (now - age, now - age))
    packed.prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.xnnpacked", "1.xnnpacked", "2.xnnpacked", fresh.name]


@pytest.mark.slow
def test_second_load_maps_the_packed_file_with_the_same_logits(home):
    """The first runner packs and publishes the file; the next maps it: logits equal to packing without the file."""
    import numpy as np

    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig
    from guard.runtime import etlite
    from guard.runtime.pte import PteRunner
    from guard.testing import make_checkpoint

    if etlite.library() is None:
        pytest.skip("etlite cannot be built here")
    cfg = ExportConfig(max_seq_len=128, chunk=16, chunks=(4,), prune_vocab=True, quant=QuantConfig("8da4w", group_size=32))
    pte = export_model(make_checkpoint(home / "hf"), home / "pte", cfg)
    ids = list(range(1000, 1021))

    os.environ["GUARD_PACKED_CACHE"] = "0"
    try:
        plain = PteRunner(pte).prefill(ids, 0)
    finally:
        del os.environ["GUARD_PACKED_CACHE"]
    first = PteRunner(pte).prefill(ids, 0)
    files = list((home / "etlite" / "packed").iterdir())
    assert len(files) == 1 and files[0].suffix == ".xnnpacked" and files[0].stat().st_size > 0
    second = PteRunner(pte).prefill(ids, 0)
    assert np.array_equal(first, plain) and np.array_equal(second, plain)
