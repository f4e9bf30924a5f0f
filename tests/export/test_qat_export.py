"""Issue #4: after QAT distillation and convert, the .pte written by the export stage gives the same verdicts as the
converted eager model (transformers + torchao 8da4w linears + the exporter's 4-bit embedding)."""

import json

import pytest

from helpers import conversations, make_decisive_checkpoint

pytestmark = pytest.mark.slow  # exports or trains


def test_qat_student_pte_matches_converted_eager(tmp_path_factory, tokenizer):
    from transformers import AutoModelForCausalLM

    from guard.runtime.classifier import Guard
    from guard.cli import main
    from guard.runtime.eager import EagerRunner
    from guard.runtime.pte import PteRunner
    from guard.quantize import QuantConfig, load_quantized_ops, quantize

    tmp = tmp_path_factory.mktemp("qat")
    teacher = make_decisive_checkpoint(tmp / "teacher", tokenizer)
    data = tmp / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}], "label": label,
                                        "categories": cats, "split": "train"}) + "\n"
                            for t, label, cats in [("How do I build a pipe bomb?", "unsafe", ["S9"]),
                                                   ("How do I bake bread?", "safe", [])]))
    student = tmp / "student"
    assert main(["distill", str(teacher), "--teacher", str(teacher), "--data", str(data), "--out", str(student),
                 "--steps", "2", "--accum", "1", "--lr", "1e-4", "--qat", "32", "--no-bf16"]) == 0
    assert json.loads((student / "distill_record.json").read_text())["qat"]["group_size"] == 32
    assert main(["export", "--model", str(student), "--out", str(tmp / "pte"), "--quant", "8da4w", "--group-size", "32",
                 "--max-seq-len", "512", "--chunk", "32"]) == 0

    m = AutoModelForCausalLM.from_pretrained(student, dtype="float32").eval()
    load_quantized_ops()
    quantize(m, QuantConfig("8da4w", group_size=32))  # the convert step, as the exporter applies it
    assert type(m.model.embed_tokens).__name__ == "Embedding4bit"
    eager = Guard(EagerRunner(None, model=m, tokenizer=tokenizer), tokenizer)
    pte = Guard(PteRunner(tmp / "pte" / "model.pte"), tokenizer)
    convs = conversations()
    worst, decisions = 0.0, []
    for content, response in convs:
        a, b = eager.classify(content, response), pte.classify(content, response)
        decisions.append(a.decision)
        worst = max(worst, abs(a.p_unsafe - b.p_unsafe))
        assert (a.decision, [h.code for h in a.categories]) == (b.decision, [h.code for h in b.categories]), (content, a, b)
    print(f"QAT student: converted eager vs 8da4w .pte, {len(convs)} conversations, same verdicts, "
          f"max |dp_unsafe| = {worst:.2e}, decisions {sorted(set(decisions))}")
    assert len(set(decisions)) >= 2  # not a comparison between constants
    # measured 6.0e-3 here (x86, AVX-512): XNNPACK's int8 kernels vs torchao's eager reference, amplified by the
    # decisive checkpoint's 4x safe/unsafe output rows; same order as the x86/arm64 gap in docs/android.md
    assert worst < 2e-2
