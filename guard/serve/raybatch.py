"""Classify a JSONL corpus on a Ray cluster with Ray Data: ``map_batches`` over an actor pool, one loaded guard
per actor. Same input lines, output records, resume-by-id and bad-line handling as ``guard classify --jsonl``
(guard.runtime.batch); the output is written in input order.

    guard classify --jsonl IN --out OUT --ray [ADDRESS]          # ADDRESS: "auto", "ray://host:10001"; none: local
    python -m guard.serve.raybatch --jsonl IN --out OUT [--address ADDR] [--actors N] [--pte FILE | --model DIR]

Without an address a local Ray cluster is started with ``actors`` CPUs. Each actor loads the model from the same
path, so on a multi-node cluster the model must be at that path on every node (or on shared storage).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from guard.errors import GuardError


class GuardActor:
    """A Ray Data callable class: constructed once per actor (loads the guard), called once per batch."""

    def __init__(self, spec):
        from guard.serve.workers import load_guard

        self.guard = load_guard(spec)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        records = []
        for rid, line, messages in zip(batch["id"], batch["line"], batch["messages"]):
            try:
                records.append(json.dumps({"id": json.loads(rid), **self.guard.classify(json.loads(messages)).to_dict()},
                                          ensure_ascii=False))
            except GuardError as e:
                records.append(json.dumps({"id": json.loads(rid), "line": int(line), "error": str(e)}, ensure_ascii=False))
        return {"line": np.asarray(batch["line"]), "record": np.asarray(records, dtype=object)}


def read_requests(in_path: Path, done: set, max_line_bytes: int, log):
    """-> (rows to classify, {line: error record}, counts): the batch path's parsing, id and resume rules
    (guard.runtime.batch): ids keep their JSON type, a repeated id is an error line, ids in ``done`` are skipped."""
    from guard.runtime.batch import new_counts, read_lines, requests

    rows, errors, counts = [], {}, new_counts()
    with open(in_path, "rb") as fh:
        for lineno, rid, req, err in requests(read_lines(fh, max_line_bytes), max_line_bytes, done, counts):
            if err is None and "image" in req:
                err = "this line has an 'image' but the model is text-only"
            if err is not None:
                print(f"{in_path}:{lineno}: skipped: {err}", file=log)
                errors[lineno] = {"id": rid, "line": lineno, "error": err}
                counts["errors"] += 1
                continue
            rows.append({"id": json.dumps(rid), "line": lineno, "messages": json.dumps(req["messages"], ensure_ascii=False)})
    return rows, errors, counts


def run_ray(in_path, out_path, spec=None, address: str | None = None, actors: int = 2, batch_size: int = 16,
            max_line_bytes: int = 1 << 20, log=None) -> dict:
    """Classify ``in_path`` into ``out_path`` (appended) on Ray; returns counts like ``run_batch``."""
    import ray

    from guard.runtime.batch import BatchOutput, check_paths
    from guard.serve.workers import LoadSpec

    log = log if log is not None else sys.stderr
    if actors < 1:
        raise GuardError(f"actors must be at least 1, got {actors}")
    in_path, out_path = check_paths(in_path, out_path)
    spec = spec or LoadSpec()
    with BatchOutput(out_path) as out:  # locked, error records removed (their lines are retried), finished ids known
        if spec.model is None and spec.pte is None:  # resolve the default model once, in the driver
            from guard.runtime.load import resolve

            source = resolve()
            spec.model, spec.pte = (None, str(source.path)) if source.kind == "pte" else (str(source.path), None)
        rows, errors, counts = read_requests(in_path, out.done, max_line_bytes, log)
        env = {"OMP_NUM_THREADS": "1", "GUARD_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        started = not ray.is_initialized()
        if started and rows:
            kw = {"address": address} if address not in (None, "local") else {
                "num_cpus": actors, "include_dashboard": False, "object_store_memory": 256 << 20}
            ray.init(runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False, **kw)
        try:
            results = iter(())
            if rows:
                ctx = ray.data.DataContext.get_current()
                ctx.execution_options.preserve_order = True
                ctx.enable_progress_bars = False
                ds = ray.data.from_items(rows).map_batches(
                    GuardActor, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size, num_cpus=1,
                    compute=ray.data.ActorPoolStrategy(size=actors))
                results = ((int(r["line"]), json.loads(r["record"])) for r in ds.iter_rows())
            pending = sorted(errors.items())
            for line, record in results:  # in input order, bad lines in their places
                while pending and pending[0][0] < line:
                    out.write(pending.pop(0)[1])
                out.write(record)
                if "error" in record:
                    print(f"{in_path}:{line}: skipped: {record['error']}", file=log)
                    counts["errors"] += 1
                else:
                    counts[record["decision"]] += 1
            for _, record in pending:
                out.write(record)
        finally:
            if started and ray.is_initialized():
                ray.shutdown()
    return counts


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m guard.serve.raybatch", description=__doc__.split("\n\n")[0])
    p.add_argument("--jsonl", required=True, metavar="IN")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--actors", type=int, default=2, help="actors, each with one loaded guard (default 2)")
    p.add_argument("--batch-size", type=int, default=16)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="DIR")
    src.add_argument("--pte", metavar="FILE")
    args = p.parse_args(argv)
    from guard.serve.workers import LoadSpec

    try:
        c = run_ray(args.jsonl, args.out, LoadSpec(model=args.model, pte=args.pte), args.address, args.actors, args.batch_size)
    except GuardError as e:
        print(f"guard: error: {e}", file=sys.stderr)
        return 2
    print(f"done: {c['safe']} safe, {c['unsafe']} unsafe, {c['indeterminate']} indeterminate, "
          f"{c['errors']} bad lines skipped, {c['skipped_done']} already in {args.out}")
    return 3 if c["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
