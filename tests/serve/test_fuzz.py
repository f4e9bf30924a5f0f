"""schemathesis against the server's own OpenAPI spec: bounded examples, no 5xx for any generated request."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # a 60 s bounded fuzz run
def test_schemathesis_finds_no_server_error(unsafe_server, tmp_path):
    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    report = tmp_path / "report.ndjson"
    cmd = [st, "run", f"{unsafe_server}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "8",
           "--seed", "1", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--request-timeout", "60",
           "--max-time", "60", "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache stays there
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    text = out.stdout
    assert "No issues found" in text or " passed" in text, text[-2000:]
    # it did exercise the endpoints: every POST operation of the API was tested
    events = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    blob = json.dumps(events)
    for path in ("/v1/moderations", "/v1/chat/completions", "/v1/safety/run-shield", "/v1/moderations/streams"):
        assert f"POST {path}" in blob, path
