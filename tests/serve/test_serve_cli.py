"""`guard serve` argument handling (no model is loaded in these tests)."""

import socket

from guard.cli import main
from guard.cli.serve import exposure_warning


def test_exposure_warning_only_off_loopback_without_key():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert "WARNING" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", "k") is None


def test_bad_options_and_busy_port_are_one_line_errors(tiny_model_dir, capsys):
    assert main(["serve", "--model", str(tiny_model_dir), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_dir / "missing")]) == 2
    assert "model not found" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--model", str(tiny_model_dir), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1" in err and "Traceback" not in err
