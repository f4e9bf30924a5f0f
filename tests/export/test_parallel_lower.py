"""guard.export.parallel: methods lowered in forked processes make the same program as one process does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guard.errors import GuardError

pytestmark = pytest.mark.slow  # exports


def _export(model_dir, out, workers):
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    cfg = ExportConfig(max_seq_len=256, chunk=32, chunks=(8,), prune_vocab=True, workers=workers,
                       quant=QuantConfig("8da4w", group_size=32))
    return export_model(model_dir, out, cfg)


def test_two_processes_write_the_program_one_process_writes(tiny_model_dir, tmp_path):
    from guard.runtime.pte import PteRunner

    one, two = _export(tiny_model_dir, tmp_path / "one", 1), _export(tiny_model_dir, tmp_path / "two", 2)
    assert one.stat().st_size == two.stat().st_size
    a, b = PteRunner(one), PteRunner(two)
    assert a.meta == b.meta
    rng = np.random.default_rng(0)
    for n in (1, 5, 8, 31, 32, 70):  # every method: decode, prefill_8, prefill (32) and mixes of them
        ids = [int(i) for i in rng.integers(0, 2000, n)]
        la, lb = np.asarray(a.prefill(ids, 0)).copy(), np.asarray(b.prefill(ids, 0)).copy()
        assert np.array_equal(la, lb), n
        assert np.array_equal(np.asarray(a.decode(7, n)), np.asarray(b.decode(7, n))), n


class _Fails(torch.nn.Module):
    def forward(self, x):
        if x.sum() > -1:  # data-dependent control flow: torch.export refuses it
            return x + 1
        return x


class _Fine(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_a_failing_child_is_a_guard_error_naming_its_method():
    from guard.export.parallel import lower_methods

    x = (torch.ones(2, 2),)
    with pytest.raises(GuardError, match=r"lowering method\(s\) broken failed: .+"):
        lower_methods({"fine": (_Fine(), x), "broken": (_Fails(), x)}, workers=2)


def test_worker_count_is_bounded_by_methods():
    from guard.export.parallel import worker_count

    assert worker_count(8, 3) == 3
    assert worker_count(1, 4) == 1
    assert 1 <= worker_count(0, 4) <= 4
