"""Eager Llama Guard 3 Vision: the runner against a plain transformers forward built the processor's way, the
VisionGuard API, and the CLI (`guard classify --image`, JSONL `image` field)."""

import json

import pytest
import torch

from guard.cli import main
from guard.errors import GuardError
from guard.format.prompt import encode
from guard.format.verdict import Verdict


@pytest.fixture(scope="module")
def runner(tiny_vision):
    from guard.vision.eager import EagerVisionRunner

    return EagerVisionRunner(tiny_vision["dir"])


@pytest.fixture(scope="module")
def guard(runner):
    from guard.vision.classifier import VisionGuard

    return VisionGuard(runner, runner.tokenizer)


def reference_logits(model, ids, inputs):
    """One uncached forward with the inputs transformers' MllamaProcessor would build (its own mask helpers)."""
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense, get_cross_attention_token_mask)

    mask = convert_sparse_cross_attention_mask_to_dense([get_cross_attention_token_mask(ids, 128256)], [[inputs.num_tiles]],
                                                        4, len(ids))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), **inputs.torch(), cross_attention_mask=torch.from_numpy(mask))
    return out.logits[0, -1]


def test_runner_matches_a_plain_transformers_forward(runner, tiny_vision):
    from guard.vision.image import load_image
    from guard.vision.preprocess import preprocess

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this OK?"}]},
            {"role": "assistant", "content": "Yes, it is fine."}]
    ids = encode(msgs, None, runner.tokenizer).ids + [runner.tokenizer.tokens.blank]
    inputs = preprocess(load_image(tiny_vision["unsafe"])[0], runner.vision)
    ref = reference_logits(runner.model, ids, inputs)
    runner.set_image(inputs)
    full = runner.prefill(ids, 0)
    assert float((full - ref).abs().max()) < 1e-4
    # prefix reuse keeps the image's cross-attention cache: re-feed only the tail, then step token by token
    tail = runner.prefill(ids[-9:], len(ids) - 9)
    assert float((tail - ref).abs().max()) < 1e-4
    runner.prefill(ids[:-1], 0)
    step = runner.decode(ids[-1], len(ids) - 1)
    assert float((step - ref).abs().max()) < 1e-4
    # the image matters: another image gives other logits
    from guard.vision.image import load_image as li

    runner.set_image(preprocess(li(tiny_vision["safe"])[0], runner.vision))
    assert float((runner.prefill(ids, 0) - ref).abs().max()) > 1e-3


def test_prompt_and_response_classification(guard, tiny_vision):
    bad = guard.classify(tiny_vision["text"], image=tiny_vision["unsafe"])
    ok = guard.classify(tiny_vision["text"], image=tiny_vision["safe"])  # same tokens, new image: no stale reuse
    assert bad.p_unsafe > 0.99 and bad.blocked and bad.raw.startswith("unsafe\nS")
    assert ok.decision == "safe" and ok.p_unsafe < 0.01 and not ok.blocked
    assert isinstance(ok, Verdict) and set(ok.to_dict()) == set(Verdict("safe", [], 0.0, False).to_dict())
    t = ok.timings
    assert t["image"]["tiles"] == 3 and t["image"]["canvas"] == [3, 1] and t["image_encode_ms"] > 0
    again = guard.classify(tiny_vision["text"], image=tiny_vision["safe"])
    assert again.timings["image_cached"] and again.p_unsafe == pytest.approx(ok.p_unsafe, abs=1e-6)
    resp = guard.classify(tiny_vision["text"], "Here is what it shows.", image=tiny_vision["safe"])
    assert resp.role == "Agent"
    text_only = guard.classify("What is in this picture?")
    assert text_only.role == "User" and "image" not in text_only.timings


def test_messages_with_an_image_part(guard, tiny_vision):
    msgs = [{"role": "user", "content": [{"type": "text", "text": tiny_vision["text"]}, {"type": "image"}]}]
    v = guard.classify(msgs, image=tiny_vision["unsafe"])
    assert v.p_unsafe > 0.99
    with pytest.raises(GuardError, match="no image was given"):
        guard.classify(msgs)


def test_bad_image_and_text_model_errors(guard, tiny_vision, tiny_model_dir, tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(GuardError, match="x.png"):
        guard.classify("hi", image=tmp_path / "x.png")
    from guard.runtime.eager import EagerRunner
    from guard.vision.classifier import VisionGuard

    text = EagerRunner(tiny_model_dir)
    with pytest.raises(GuardError, match="text-only"):
        VisionGuard(text, text.tokenizer)


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_image(tiny_vision, capsys):
    d = str(tiny_vision["dir"])
    code, out, err = run_cli(["classify", "--model", d, "--image", str(tiny_vision["safe"]), "--json", tiny_vision["text"]], capsys)
    v = json.loads(out)
    assert code == 0 and v["decision"] == "safe" and v["timings"]["image"]["tiles"] == 3
    code, out, _ = run_cli(["classify", "--model", d, "--image", str(tiny_vision["unsafe"]), tiny_vision["text"]], capsys)
    assert code == 11 and out.startswith("INDETERMINATE") and "p_unsafe=0.99" in out  # unsafe, then random category tokens
    code, out, _ = run_cli(["classify", "--model", d, "--image", str(tiny_vision["safe"]), "--response", "Sure.", "--json",
                            tiny_vision["text"]], capsys)
    assert json.loads(out)["role"] == "Agent"


@pytest.mark.parametrize("bad", ["missing.png", "corrupt"])
def test_cli_bad_image_is_one_line_exit_2(bad, tiny_vision, tmp_path, capsys):
    path = tmp_path / bad
    if bad == "corrupt":
        path.write_bytes(b"GIF89a" + bytes(40))
    code, out, err = run_cli(["classify", "--model", str(tiny_vision["dir"]), "--image", str(path), "hi"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("guard: error: ") and "Traceback" not in err


def test_cli_image_with_text_model_is_refused(tiny_model_dir, tiny_vision, capsys):
    code, _, err = run_cli(["classify", "--model", str(tiny_model_dir), "--image", str(tiny_vision["safe"]), "hi"], capsys)
    assert code == 2 and "text-only" in err


def test_cli_jsonl_image_field(tiny_vision, tmp_path, capsys):
    import shutil

    shutil.copy(tiny_vision["safe"], tmp_path / "safe.png")  # relative paths resolve from the JSONL's directory
    lines = [{"id": "a", "prompt": tiny_vision["text"], "image": "safe.png"},
             {"id": "b", "prompt": tiny_vision["text"], "image": str(tiny_vision["unsafe"])},
             {"id": "c", "prompt": "no image here"},
             {"id": "d", "prompt": "x", "image": "nope.png"},
             {"id": "e", "prompt": "x", "image": 3}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, err = run_cli(["classify", "--model", str(tiny_vision["dir"]), "--jsonl", str(tmp_path / "in.jsonl"),
                              "--out", str(tmp_path / "out.jsonl"), "--allow-any-path"], capsys)  # b's image is elsewhere
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert code == 3, err
    assert rows["a"]["decision"] == "safe" and rows["b"]["p_unsafe"] > 0.99 and "decision" in rows["c"]
    assert "image not found" in rows["d"]["error"] and "path string" in rows["line-5"]["error"]  # unparsed line: id by line number
