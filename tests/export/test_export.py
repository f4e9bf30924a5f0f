"""ExecuTorch export and runtime: real .pte files run by the ExecuTorch runtime against the eager transformers model."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from guard.errors import GuardError
from helpers import conversations, make_decisive_checkpoint

pytestmark = pytest.mark.slow  # exports or trains

MAX_SEQ, CHUNK = 512, 32


@pytest.fixture(scope="module")
def decisive_dir(tmp_path_factory, tokenizer):
    return make_decisive_checkpoint(tmp_path_factory.mktemp("decisive") / "model", tokenizer)


@pytest.fixture(scope="module")
def fp32_pte(decisive_dir, tmp_path_factory):
    """Exported through the real CLI."""
    from guard.cli import main

    out = tmp_path_factory.mktemp("pte_fp32")
    assert main(["export", "--model", str(decisive_dir), "--out", str(out), "--max-seq-len", str(MAX_SEQ),
                 "--chunk", str(CHUNK)]) == 0
    return out / "model.pte"


@pytest.fixture(scope="module")
def int4_export(decisive_dir, tmp_path_factory):
    """(path, report) of an 8da4w, pruned export."""
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    cfg = ExportConfig(max_seq_len=MAX_SEQ, chunk=CHUNK, prune_vocab=True, quant=QuantConfig("8da4w", group_size=32))
    report = {}
    path = export_model(decisive_dir, tmp_path_factory.mktemp("pte_int4"), cfg, report)
    return path, report


@pytest.fixture(scope="module")
def int4_pte(int4_export):
    return int4_export[0]


def test_everything_heavy_is_delegated_to_xnnpack(int4_export):
    """Only row copies stay in portable kernels: O(T) cache writes and row reads, and the O(S) copy of the cache
    slots a step attends to (the dynamic-span slice, one per K and V cache); no bmm/softmax/linear outside XNNPACK."""
    allowed = {"aten_index_put_default", "aten_index_select_default", "aten_embedding_default",
               "quantized_decomposed_embedding_4bit_dtype", "aten_slice_copy_tensor", "sym_size"}
    for method, d in int4_export[1]["delegation"].items():
        assert set(d["portable"]) <= allowed, (method, d["portable"])
        assert d["subgraphs"] >= 1


def _argmax_token(runner, logits):
    col = int(logits.argmax())  # numpy (PteRunner) or torch (EagerRunner)
    return col if runner.output_ids is None else runner.output_ids[col]


def test_fp32_pte_matches_eager_on_50_conversations(decisive_dir, fp32_pte, tokenizer):
    from guard.format.categories import Policy
    from guard.runtime.classifier import Guard
    from guard.runtime.eager import EagerRunner
    from guard.runtime.pte import PteRunner

    eager, pte = EagerRunner(decisive_dir), PteRunner(fp32_pte)
    assert pte.output_ids is None and pte.max_seq_len == MAX_SEQ
    worst, decisions = 0.0, set()
    for i, (content, response) in enumerate(conversations()):
        policy = Policy(excluded=("S6",)) if i % 7 == 3 else Policy()  # a different head: the prefix cache must follow
        a = Guard(eager, tokenizer, policy).classify(content, response)
        b = Guard(pte, tokenizer, policy).classify(content, response)
        assert (a.decision, a.raw, [h.code for h in a.categories]) == (b.decision, b.raw, [h.code for h in b.categories]), i
        worst = max(worst, abs(a.p_unsafe - b.p_unsafe))
        decisions.add(a.decision)
    print(f"max |p_unsafe(eager) - p_unsafe(pte)| = {worst:.2e} over {len(conversations())} conversations, {sorted(decisions)}")
    assert len(conversations()) >= 50
    assert worst < 1e-3
    assert {"safe", "unsafe"} <= decisions  # both verdicts, and category decoding, are exercised


def test_prefix_semantics_and_decode_match_eager(decisive_dir, fp32_pte, tokenizer):
    """positions < start_pos keep their values; rewriting a suffix and single-token decode agree with eager."""
    from guard.runtime.eager import EagerRunner
    from guard.runtime.pte import PteRunner

    eager, pte = EagerRunner(decisive_dir), PteRunner(fp32_pte)
    a = tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 6)  # > 2 chunks
    b = tokenizer.encode("A different ending, written after the shared prefix.")
    for r in (eager, pte):
        r.prefill(a + b, 0)
    for start in (len(a), len(a) - 5, 40):
        x, y = eager.prefill(b, start), torch.as_tensor(pte.prefill(b, start))
        assert torch.allclose(x, y, atol=1e-4), (start, (x - y).abs().max())
    pos = 40 + len(b)
    for t in b[:5]:
        x, y = eager.decode(t, pos), torch.as_tensor(pte.decode(t, pos))
        assert torch.allclose(x, y, atol=1e-4)
        pos += 1


def test_attention_span_gives_the_whole_cache_logits(decisive_dir, fp32_pte, tmp_path, tokenizer):
    """The default export attends to key slots 0..S-1 only (S dynamic, the step's end rounded up to the span step):
    its logits equal a whole-cache export's, through etlite and through executorch's bindings, for spans from one
    step to max_seq_len, a prefix rewritten later and single-token decode."""
    import numpy as np

    from guard.export import ExportConfig, export_model
    from guard.export.metadata import SPAN
    from guard.runtime.pte import PteRunner, load_program

    whole = export_model(decisive_dir, tmp_path, ExportConfig(max_seq_len=MAX_SEQ, chunk=CHUNK, attention_span=0))
    spans = [PteRunner(fp32_pte), PteRunner(fp32_pte, program=load_program(fp32_pte))]
    ref = PteRunner(whole)
    assert [r.span for r in spans] == [64, 64] and ref.span == 0 and SPAN in spans[0].meta and SPAN not in ref.meta
    assert spans[0]._etl and not spans[1]._etl
    ids = tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 60)[:MAX_SEQ - 4]
    steps = [(0, 70), (70, 1), (71, 1), (5, 200), (205, len(ids) - 205), (40, 3)]  # ends 70 .. MAX_SEQ - 4, then back
    for start, n in steps:
        want = np.asarray(ref.prefill(ids[start:start + n], start))
        for r in spans:
            got = np.asarray(r.prefill(ids[start:start + n], start))
            assert np.abs(got - want).max() < 1e-4, (start, n, r._etl, np.abs(got - want).max())
    assert spans[0]._keys(70).tolist() == list(range(128)) and len(spans[0]._keys(MAX_SEQ)) == MAX_SEQ


def test_metadata_is_stored_in_the_pte(fp32_pte, int4_pte, tokenizer):
    from guard.export.metadata import guard_vocab
    from guard.runtime.pte import PteRunner
    from guard.format.prompt import FORMAT_VERSION

    r = PteRunner(fp32_pte)
    assert r.threads == len(os.sched_getaffinity(0))  # XNNPACK uses every available core
    assert r.meta["get_prompt_format"] == FORMAT_VERSION and r.meta["get_quant_scheme"] == "none" and r.meta["get_group_size"] == 0
    assert r.meta["get_safe_id"] == tokenizer.tokens.safe and r.meta["get_eot_id"] == tokenizer.tokens.eot
    assert r.meta["get_prefill_chunks"] == [CHUNK, 8] and r.chunks == [CHUNK, 8, 1]  # prefill, prefill_8, decode
    q = PteRunner(int4_pte)
    assert q.meta["get_quant_scheme"] == "8da4w" and q.meta["get_group_size"] == 32
    assert q.output_ids == guard_vocab(tokenizer)
    assert {tokenizer.tokens.safe, tokenizer.tokens.unsafe, tokenizer.tokens.eot} <= set(q.output_ids)
    assert int4_pte.stat().st_size < fp32_pte.stat().st_size / 4


def agreement(fp32_pte, int4_pte, tokenizer) -> tuple[int, int, float]:
    from guard.runtime.classifier import Guard
    from guard.runtime.pte import PteRunner

    f, q = Guard(PteRunner(fp32_pte), tokenizer), Guard(PteRunner(int4_pte), tokenizer)
    convs = conversations()
    same, worst = 0, 0.0
    for content, response in convs:
        a, b = f.classify(content, response), q.classify(content, response)
        same += a.decision == b.decision
        worst = max(worst, abs(a.p_unsafe - b.p_unsafe))
    return same, len(convs), worst


def test_int4_pruned_agrees_with_fp32(fp32_pte, int4_pte, tokenizer):
    same, n, worst = agreement(fp32_pte, int4_pte, tokenizer)
    print(f"INT4 (8da4w, group 32, pruned) vs fp32: {same}/{n} same decisions, max |dp_unsafe| = {worst:.3f}")
    assert same >= 0.8 * n


def test_int4_with_coarse_embedding_groups_agrees_with_fp32(decisive_dir, fp32_pte, tokenizer, tmp_path):
    """The 1B-shape recipe's embedding scales (one fp16 scale per 256 values there; here per 64-wide row, the
    coarsest the tiny model allows) keep the agreement of the group-32 embedding."""
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig

    cfg = ExportConfig(max_seq_len=MAX_SEQ, chunk=CHUNK, prune_vocab=True,
                       quant=QuantConfig("8da4w", group_size=32, embedding_group_size=64))
    same, n, worst = agreement(fp32_pte, export_model(decisive_dir, tmp_path, cfg), tokenizer)
    print(f"INT4 (8da4w, group 32, embedding group 64, pruned) vs fp32: {same}/{n} same decisions, max |dp_unsafe| = {worst:.3f}")
    assert same >= 0.8 * n


def test_int8_weights_export_is_delegated_and_agrees_with_fp32(decisive_dir, fp32_pte, int4_pte, tokenizer, tmp_path):
    """8da8w: int8 per-channel weights, run by XNNPACK like 8da4w, recorded in the metadata, and closer to fp32."""
    from guard.export import ExportConfig, export_model
    from guard.quantize import QuantConfig
    from guard.runtime.pte import PteRunner

    report = {}
    cfg = ExportConfig(max_seq_len=MAX_SEQ, chunk=CHUNK, prune_vocab=True, quant=QuantConfig("8da8w"))
    path = export_model(decisive_dir, tmp_path, cfg, report)
    allowed = {"aten_index_put_default", "aten_index_select_default", "quantized_decomposed_embedding_4bit_dtype",
               "aten_slice_copy_tensor", "sym_size"}
    for method, d in report["delegation"].items():
        assert set(d["portable"]) <= allowed and d["subgraphs"] >= 1, (method, d)
    meta = PteRunner(path).meta
    assert meta["get_quant_scheme"] == "8da8w" and meta["get_group_size"] == 0  # per channel: no group
    same, n, worst = agreement(fp32_pte, path, tokenizer)
    _, _, worst4 = agreement(fp32_pte, int4_pte, tokenizer)
    print(f"8da8w (pruned) vs fp32: {same}/{n} same decisions, max |dp_unsafe| = {worst:.4f} (8da4w group 32: {worst4:.4f})")
    assert same == n and worst < worst4


def test_classify_cli_with_pte(fp32_pte, capsys):
    from guard.cli import main

    code = main(["classify", "--pte", str(fp32_pte), "--json", "How do I bake bread?"])
    out = capsys.readouterr().out
    assert code in (0, 10, 11) and '"decision"' in out


def test_too_long_conversation_is_refused_and_runner_stays_usable(fp32_pte, tokenizer):
    from guard.errors import SequenceTooLong
    from guard.runtime.classifier import Guard
    from guard.runtime.pte import PteRunner

    r = PteRunner(fp32_pte)
    g = Guard(r, tokenizer, long_policy="error")  # the default policy windows it instead (issue 18)
    with pytest.raises(SequenceTooLong, match="maximum"):
        g.classify("word " * 600)
    assert Guard(r, tokenizer).classify("word " * 600).truncation
    with pytest.raises(GuardError, match="max_seq_len"):
        r.prefill([1] * 10, MAX_SEQ - 5)
    assert g.classify("hello").decision in ("safe", "unsafe", "indeterminate")


def _tiny_program(path, constants):
    from executorch.exir import to_edge

    class Add(torch.nn.Module):
        def forward(self, x):
            return x + 1

    ep = torch.export.export(Add(), (torch.ones(2),))
    path.write_bytes(to_edge(ep, constant_methods=constants).to_executorch().buffer)
    return path


def test_non_guard_pte_is_refused(tmp_path):
    from guard.runtime.pte import PteRunner

    p = _tiny_program(tmp_path / "other.pte", {"get_max_seq_len": 128})
    with pytest.raises(GuardError, match="not a guard model") as e:
        PteRunner(p)
    assert "\n" not in str(e.value)


def test_missing_metadata_key_is_named(tmp_path):
    from guard.export.metadata import MARKER, PTE_FORMAT
    from guard.runtime.pte import PteRunner

    p = _tiny_program(tmp_path / "partial.pte", {MARKER: PTE_FORMAT, "get_max_seq_len": 128})
    with pytest.raises(GuardError, match="lacks metadata get_prefill_chunk"):
        PteRunner(p)


def test_truncated_pte_is_refused_and_process_stays_usable(fp32_pte, tmp_path, tokenizer):
    from guard.cli import main
    from guard.runtime.pte import PteRunner

    for frac in (0.999, 0.5, 0.02):
        bad = tmp_path / f"cut{frac}" / "model.pte"
        bad.parent.mkdir()
        shutil.copy(fp32_pte.parent / "tokenizer.json", bad.parent / "tokenizer.json")
        bad.write_bytes(fp32_pte.read_bytes()[: int(fp32_pte.stat().st_size * frac)])
        with pytest.raises(GuardError) as e:
            PteRunner(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
        assert main(["classify", "--pte", str(bad), "hi"]) == 2
    with pytest.raises(GuardError, match="not found"):
        PteRunner(tmp_path / "nope.pte")
    assert PteRunner(fp32_pte).prefill([1, 2, 3], 0).shape[0] == tokenizer.vocab_size


def test_bad_export_options(decisive_dir, tmp_path):
    from guard.cli import main

    assert main(["export", "--model", str(decisive_dir), "--out", str(tmp_path), "--quant", "8da4w",
                 "--group-size", "48"]) == 2
    assert main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "model.pte").exists()


def test_model_matches_transformers_with_tied_embeddings_and_llama3_rope(tmp_path, tokenizer):
    """guard.model.llama (eager, chunked) against transformers on a Llama 3.2-style config (the Llama Guard 3-1B layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from guard.model.llama import load_hf
    from guard.format.tokenizer import save_hf_tokenizer

    torch.manual_seed(1)
    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                      num_key_value_heads=1, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    save_hf_tokenizer(tmp_path)
    ids = tokenizer.encode("Check the rope scaling and the tied output layer, position after position. " * 3)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0, -1]
        m = load_hf(tmp_path, max_seq_len=128, chunk=16)
        pos = 0
        for i in range(0, len(ids), 16):
            part = ids[i:i + 16]
            out = m(torch.tensor([part + [0] * (16 - len(part))]), torch.arange(pos, pos + 16), torch.tensor([len(part) - 1]))
            pos += len(part)
    assert (out[0] - ref).abs().max() < 1e-4


@pytest.mark.slow
def test_int4_export_prints_no_third_party_warnings(decisive_dir, tmp_path):
    """torch/torchao/ExecuTorch warnings stay out of normal output (issue 21); GUARD_DEBUG=1 would show them."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GUARD_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "guard", "export", "--model", str(decisive_dir), "--out", str(tmp_path),
                        "--quant", "8da4w", "--group-size", "32", "--max-seq-len", "128", "--chunk", "32"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    noise = [line for line in r.stderr.splitlines() if "Warning" in line or "warn(" in line]
    assert noise == [], noise[:5]
