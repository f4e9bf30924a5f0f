"""On-device vision guard: the export-friendly mllama module against transformers, then one multi-method .pte
(vision_encoder + prefill + decode sharing buffers) run by the ExecuTorch runtime, with verdict parity."""

import json

import pytest
import torch

from guard.cli import main
from guard.errors import GuardError
from guard.format.prompt import encode

pytestmark = pytest.mark.slow  # exports or trains


@pytest.fixture(scope="module")
def eager(tiny_vision):
    from guard.vision.classifier import VisionGuard
    from guard.vision.eager import EagerVisionRunner

    r = EagerVisionRunner(tiny_vision["dir"])
    return VisionGuard(r, r.tokenizer)


def test_module_matches_transformers(tiny_vision, eager):
    from guard.vision.image import load_image
    from guard.vision.model import load_hf_vision
    from guard.vision.preprocess import preprocess

    runner = eager.runner
    m = load_hf_vision(tiny_vision["dir"], max_seq_len=256, chunk=16)
    x = preprocess(load_image(tiny_vision["unsafe"])[0], runner.vision).torch()
    with torch.no_grad():
        ref = runner.model.model.vision_model(**x).last_hidden_state[0, 0]
        mine = m.vision_model(x["pixel_values"].view(4, 3, 56, 56), x["aspect_ratio_ids"].view(1), x["aspect_ratio_mask"].view(4))
    assert float((ref - mine).abs().max()) < 1e-5
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is it fine?"}]}]
    ids = encode(msgs, None, runner.tokenizer).ids + [271]
    pos = torch.arange(len(ids))
    xrow = (pos >= ids.index(128256)).float()
    for image in (x, None):
        runner.set_image(None if image is None else preprocess(load_image(tiny_vision["unsafe"])[0], runner.vision))
        ref = runner.prefill(ids, 0)
        with torch.no_grad():
            if image is not None:
                m.encode_image(x["pixel_values"], x["aspect_ratio_ids"], x["aspect_ratio_mask"])
            out = m(torch.tensor([ids]), pos, torch.tensor([len(ids) - 1]), xrow, torch.ones(1) if image else torch.zeros(1))[0]
        assert float((out - ref).abs().max()) < 1e-4


def test_wrong_checkpoint_is_refused(tiny_model_dir):
    from guard.vision.model import load_hf_vision

    with pytest.raises(GuardError, match="mllama"):
        load_hf_vision(tiny_model_dir)


@pytest.fixture(scope="module")
def pte(tiny_vision, tmp_path_factory):
    """Exported through the CLI: `guard export` routes an mllama dir to the vision exporter."""
    out = tmp_path_factory.mktemp("vision_pte")
    assert main(["export", "--model", str(tiny_vision["dir"]), "--out", str(out), "--max-seq-len", "384", "--chunk", "32"]) == 0
    assert {"model.pte", "tokenizer.json", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    return out / "model.pte", None


def test_pte_has_three_methods_and_metadata(pte):
    from guard.runtime.load import load_runner
    from guard.runtime.pte import load_program
    from guard.vision.pte import VisionPteRunner

    path = pte[0]
    assert {"vision_encoder", "prefill", "decode"} <= set(load_program(path).method_names)
    r, _ = load_runner(path)
    assert isinstance(r, VisionPteRunner)
    assert r.meta["get_guard_format"] == "guard-vision-pte-1" and r.meta["get_image_token_id"] == 128256
    assert (r.vision.tile_size, r.vision.max_tiles) == (56, 4) and list(r._program.load_method("get_cross_layers").execute([])) == [1]
    assert r.max_seq_len == 384 and r.chunk == 32 and r.output_ids is None


def test_verdict_parity_with_eager(pte, eager, tiny_vision):
    from guard.vision.classifier import VisionGuard
    from guard.vision.pte import VisionPteRunner

    r = VisionPteRunner(pte[0])
    device = VisionGuard(r, r.tokenizer)
    cases = [(tiny_vision["unsafe"], None), (tiny_vision["safe"], None), (tiny_vision["safe"], "A long enough answer."),
             (None, None), (tiny_vision["unsafe"], "Sure.")]
    seen = set()
    for image, response in cases:
        a = device.classify(tiny_vision["text"], response, image=image)
        b = eager.classify(tiny_vision["text"], response, image=image)
        assert (a.decision, a.raw, a.role, [h.code for h in a.categories]) == (b.decision, b.raw, b.role, [h.code for h in b.categories])
        assert a.p_unsafe == pytest.approx(b.p_unsafe, abs=1e-4)
        seen.add(a.decision)
        if image is not None and not a.timings["image_cached"]:
            assert a.timings["image_encode_ms"] > 0
    assert {"safe", "indeterminate"} <= seen  # the pixels decide: safe image -> safe, unsafe image -> unsafe path
    bad = device.classify(tiny_vision["text"], image=tiny_vision["unsafe"])  # same image again: not re-encoded
    assert bad.p_unsafe > 0.99 and bad.raw.startswith("unsafe\nS") and bad.timings["image_cached"]


def test_text_runtime_refuses_the_vision_pte(pte):
    from guard.runtime.pte import PteRunner

    with pytest.raises(GuardError, match="guard-vision-pte-1"):
        PteRunner(pte[0])


def test_cli_with_pte(pte, tiny_vision, capsys):
    code = main(["classify", "--pte", str(pte[0]), "--image", str(tiny_vision["safe"]), "--json", tiny_vision["text"]])
    v = json.loads(capsys.readouterr().out)
    assert code == 0 and v["decision"] == "safe" and v["timings"]["image"]["tiles"] == 3
    code = main(["classify", "--pte", str(pte[0]), "--image", str(tiny_vision["unsafe"]), tiny_vision["text"]])
    assert code == 11 and "p_unsafe=0.99" in capsys.readouterr().out


def test_bench_records_image_encode_time(pte):
    from guard.bench import BenchConfig, run_bench
    from guard.bench.report import markdown

    doc = run_bench(str(pte[0]), BenchConfig(runs=1, warmup=0, prompt_tokens=[16], decode_tokens=2))
    rec, summary = doc["runs"][0], doc["summary"]["16"]
    assert doc["backend"] == "pte-vision:none" and rec["image_encode_ms"] > 0 and rec["image_load_ms"] > 0
    assert summary["image_encode_ms"]["n"] == 1 and rec["num_prompt_tokens"] > 16
    assert "encode" in markdown([doc])


def test_vision_pte_pins_its_tokenizer(pte, tmp_path):
    """The vision .pte records the sha256 of the tokenizer.json exported beside it, as the text .pte does: an edited
    tokenizer.json is refused unless trusted explicitly (issue 21)."""
    import shutil

    import guard
    from guard.export.metadata import TOKENIZER_DIGEST, file_digest
    from guard.runtime.pte import load_program

    src = pte[0].parent
    want = load_program(pte[0]).load_method(TOKENIZER_DIGEST).execute([])[0]
    assert want == file_digest(src / "tokenizer.json")
    d = tmp_path / "edited"
    shutil.copytree(src, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["added_tokens"][0]["special"] = False  # an edit that changes how <|begin_of_text|> is read
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(GuardError, match="not the tokenizer model.pte was exported with"):
        guard.load(pte=d / "model.pte")
    g = guard.load(pte=d / "model.pte", check_tokenizer=False)
    assert g.runner.image_token == 128256
    code = main(["classify", "--pte", str(d / "model.pte"), "--trust-tokenizer", "hello"])
    assert code in (0, 10, 11)
