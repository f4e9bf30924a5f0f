"""Trace and lower a program's methods in several processes at once.

Lowering (``torch.export`` -> edge dialect -> XNNPACK partition and preprocess) is single-threaded Python and runs
once per method, so a .pte with prefill chunk methods (128/32/8) and decode costs four lowerings: about 20 minutes
for guard-mini on one core. The methods are independent until the program is assembled, so the work is split:
forked children (they inherit the quantized model, nothing is pickled on the way in) each lower some methods and
write them with ExecuTorch's own serializer (``executorch.exir.serde``, which keeps the lowered XNNPACK payloads);
the parent lowers its share meanwhile and reads theirs back. ``guard.export.lower`` then assembles one program from
the lowered methods, exactly as it does with one process: the .pte runs identically (tests/export).

A failed or killed child is a GuardError naming the method; its files are removed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from guard.errors import GuardError


def worker_count(requested: int, n_methods: int) -> int:
    """``requested`` processes (0: one per available core), never more than there are methods."""
    if requested <= 0:
        try:
            requested = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            requested = os.cpu_count() or 1
    return max(1, min(requested, n_methods))


def lower_one_process(methods: dict) -> dict:
    """name -> (module, example inputs[, dynamic shapes]) => name -> lowered edge ExportedProgram, in this process."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    with torch.no_grad():
        progs = {name: torch.export.export(m[0], m[1], dynamic_shapes=m[2] if len(m) > 2 else None, strict=True)
                 for name, m in methods.items()}
    edge = to_edge_transform_and_lower(progs, partitioner=[XnnpackPartitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    return {name: edge.exported_program(name) for name in progs}


def _child(methods: dict, folder: str) -> None:
    """In a forked child: lower ``methods``, save each as FOLDER/NAME.ep, or write FOLDER/error. Never returns."""
    code = 1
    try:
        import torch

        torch.set_num_threads(1)  # an OpenMP pool inherited through fork must not be used; tracing needs no threads
        from executorch.exir.serde.serialize import save

        for name, ep in lower_one_process(methods).items():
            tmp = Path(folder) / f"{name}.ep.tmp"
            with open(tmp, "wb") as f:
                save(ep, f)
            tmp.replace(Path(folder) / f"{name}.ep")
        code = 0
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which raises)
        try:
            (Path(folder) / "error").write_text(f"{type(e).__name__}: {e}"[:2000])
        except OSError:
            pass
    finally:
        os._exit(code)


def lower_methods(methods: dict, workers: int = 0) -> dict:
    """name -> (module, example inputs) => name -> lowered edge ExportedProgram, in the methods' order, using up
    to ``workers`` processes (see worker_count). One process when fork is unavailable."""
    n = worker_count(workers, len(methods))
    if n == 1 or not hasattr(os, "fork"):
        return lower_one_process(methods)
    import multiprocessing as mp

    from executorch.exir.serde.serialize import load

    names = list(methods)
    groups = [names[i::n] for i in range(n)]  # round-robin: the methods' graphs are about the same size
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="guard-lower-") as tmp:
        children = []
        try:
            for i, group in enumerate(groups[1:], 1):
                folder = Path(tmp) / str(i)
                folder.mkdir()
                p = ctx.Process(target=_child, args=({k: methods[k] for k in group}, str(folder)), daemon=True)
                p.start()
                children.append((p, folder, group))
            out = lower_one_process({k: methods[k] for k in groups[0]})
            for p, folder, group in children:
                p.join()
                err = folder / "error"
                if p.exitcode != 0 or err.exists():
                    why = err.read_text() if err.exists() else f"the lowering process ended with exit code {p.exitcode}"
                    raise GuardError(f"lowering method(s) {', '.join(group)} failed: {why}")
                for name in group:
                    with open(folder / f"{name}.ep", "rb") as f:
                        out[name] = load(f)
        finally:
            for p, _, _ in children:
                if p.is_alive():
                    p.kill()
                    p.join()
    return {name: out[name] for name in names}
