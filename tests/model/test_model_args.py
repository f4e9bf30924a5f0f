"""Model shapes are described once (ModelArgs, VisionArgs): the tiny test checkpoints are written from them through
to_hf, and from_hf reads them back unchanged."""

import json

import pytest

from guard.model.llama import ModelArgs
from guard.testing import make_checkpoint, tiny
from guard.vision.model import VisionArgs, args_from_hf
from guard.vision.testing import LLAMA3_ROPE, mllama_config, tiny_encoder, tiny_text


def test_text_args_round_trip():
    for args in (tiny(), tiny(n_layers=4, max_seq_len=512, tie_embeddings=True), tiny_text(), ModelArgs()):
        assert ModelArgs.from_hf(args.to_hf(), max_seq_len=args.max_seq_len) == args


def test_vision_args_round_trip():
    for v in (tiny_encoder(), VisionArgs()):
        assert VisionArgs.from_hf(v.to_hf()) == v
    cfg = mllama_config(tiny_text(), tiny_encoder(), (1,)).to_dict()  # through transformers' own config classes
    text, vision, cross = args_from_hf(cfg, max_seq_len=16384)
    assert (text, vision, cross) == (tiny_text(), tiny_encoder(), [1]) and text.rope_scaling == LLAMA3_ROPE


def test_checkpoint_config_is_the_args(tmp_path):
    d = make_checkpoint(tmp_path / "m", tiny(n_layers=1, dim=32, hidden_dim=48))
    cfg = json.loads((d / "config.json").read_text())
    assert ModelArgs.from_hf(cfg, max_seq_len=cfg["max_position_embeddings"]) == tiny(n_layers=1, dim=32, hidden_dim=48)


def test_tiny_model_cli(tmp_path, capsys):
    from guard.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--layers", "1", "--hidden", "32", "--seed", "2"]) == 0
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (1, 32, 64)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "tiny-model" in out and "write a tiny random Llama Guard-format checkpoint" in out  # HELP from its module
