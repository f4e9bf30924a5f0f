"""JSONL batch classification: appends results, resumes by id, reports and skips bad lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from guard.errors import GuardError

MAX_LINE_BYTES = 1 << 20


def parse_line(raw: bytes, lineno: int, max_bytes: int = MAX_LINE_BYTES) -> tuple[str, dict]:
    """-> (id, request). Raises GuardError naming the problem. A request is {"messages": [...]}."""
    if len(raw) > max_bytes:
        raise GuardError(f"line is {len(raw)} bytes, more than the {max_bytes} allowed")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GuardError("line is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise GuardError(f"malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise GuardError("each line must be a JSON object")
    rid = obj.get("id", f"line-{lineno}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise GuardError("'id' must be a string or an integer")
    image = {}
    if "image" in obj:  # a path (relative paths: from the JSONL file's directory), for a vision guard
        if not isinstance(obj["image"], str) or not obj["image"]:
            raise GuardError("'image' must be a path string")
        image = {"image": obj["image"]}
    if "messages" in obj:
        return str(rid), {"messages": obj["messages"], **image}
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise GuardError("a line needs 'messages' or a string 'prompt' (and optionally 'response')")
    msgs = [{"role": "user", "content": prompt}]
    if "response" in obj:
        if not isinstance(obj["response"], str):
            raise GuardError("'response' must be a string")
        msgs.append({"role": "assistant", "content": obj["response"]})
    return str(rid), {"messages": msgs, **image}


def done_ids(out: Path) -> set[str]:
    """Ids already in ``out``. A torn last line (a killed run) is cut off so the file stays valid JSONL."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(out, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    ids = set()
    for line in data.splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def check_paths(in_path: str | Path, out_path: str | Path) -> tuple[Path, Path]:
    """Refuse unusable batch paths with one line, before any model is loaded or any output is written."""
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.is_dir():
        raise GuardError(f"input {in_path} is a directory, not a JSONL file")
    if not in_path.is_file():
        raise GuardError(f"input file not found: {in_path}")
    if in_path.resolve() == out_path.resolve():
        raise GuardError("--out must differ from the input file")
    if out_path.is_dir():
        raise GuardError(f"--out {out_path} is a directory; give a JSONL file path")
    if not out_path.parent.is_dir():
        raise GuardError(f"--out directory {out_path.parent} does not exist")
    if not os.access(out_path if out_path.exists() else out_path.parent, os.W_OK):
        raise GuardError(f"--out {out_path} is not writable")
    return in_path, out_path


def run_batch(guard, in_path: str | Path, out_path: str | Path, max_line_bytes: int = MAX_LINE_BYTES,
              progress: bool = True, log=None) -> dict:
    """Classify every line of ``in_path`` not yet in ``out_path``; return the counts.

    ``log`` defaults to the current ``sys.stderr``, looked up per call: a default bound at import time
    outlives a redirected or closed stream (pytest's capture, an embedding app's logger swap)."""
    from tqdm import tqdm

    log = log if log is not None else sys.stderr

    in_path, out_path = check_paths(in_path, out_path)
    seen = done_ids(out_path)
    counts = {"safe": 0, "unsafe": 0, "indeterminate": 0, "errors": 0, "skipped_done": 0}
    with open(in_path, "rb") as fh:
        total = sum(1 for _ in fh)
    with open(in_path, "rb") as fin, open(out_path, "ab") as fout:
        for lineno, raw in enumerate(tqdm(fin, total=total, disable=not progress, unit="line", file=log), start=1):
            if not raw.strip():
                continue
            rid = f"line-{lineno}"
            try:
                rid, req = parse_line(raw.rstrip(b"\r\n"), lineno, max_line_bytes)
                if rid in seen:
                    counts["skipped_done"] += 1
                    continue
                if "image" in req and not guard.vision:
                    raise GuardError("this line has an 'image' but the model is text-only")
                kw = {"image": in_path.parent / req["image"]} if "image" in req else {}
                record = {"id": rid, **guard.classify(req["messages"], **kw).to_dict()}
                counts[record["decision"]] += 1
            except GuardError as e:
                if rid in seen:
                    counts["skipped_done"] += 1
                    continue
                print(f"{in_path}:{lineno}: skipped: {e}", file=log)
                record = {"id": rid, "line": lineno, "error": str(e)}
                counts["errors"] += 1
            seen.add(rid)
            fout.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
            fout.flush()
            os.fsync(fout.fileno())
    return counts
