"""`guard distill`: train a (pruned) student toward a teacher guard: KL over the guard's tokens + CE on labels.

Optional QAT (torchao ``QATConfig(guard.quantize.linear_config(scheme, g), step="prepare")``): linear layers train
with int8 dynamic activation fake quantization and int4 grouped (8da4w) or int8 per-channel (8da8w) weights. The saved
directory holds the trained float weights; the convert step (``guard.quantize.quantize_linears`` with the same
scheme and group size, as the exporter applies it) yields exactly the fake-quantized numerics (see tests). The record
says which config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from guard.errors import GuardError
from guard.train.lora import LoraConfig, add_lora, load_adapter, lora_state_dict, merge_lora
from guard.fsutil import save_atomic
from guard.train.loop import GuardCodec, TrainConfig, finetune


@dataclass
class DistillConfig:
    train: TrainConfig
    alpha: float = 0.5  # weight of CE on labels; 1 - alpha on KL to the teacher
    qat_group_size: int | None = None  # None: no QAT
    qat_scheme: str = "8da4w"  # guard.quantize.linear_config: 8da4w (int4 in groups of qat_group_size) or 8da8w
    lora: "LoraConfig | None" = None  # None: full fine-tuning; else train adapters only (saved as adapter.safetensors)
    init_adapter: str | None = None  # continue from these adapters (an earlier run's adapter.safetensors); needs lora


def check_same_tokenizer(student_tok, teacher_tok) -> None:
    a, b = student_tok.get_vocab(), teacher_tok.get_vocab()
    if a != b:
        diff = len(set(a.items()) ^ set(b.items()))
        raise GuardError(f"student and teacher tokenizers differ ({len(a)} vs {len(b)} tokens, {diff} entries differ); "
                         "distillation compares logits token by token, so both must share one tokenizer")


def guard_token_ids(codec: GuardCodec) -> list[int]:
    """The tokens a verdict is made of: safe, unsafe, end of turn, newline, comma, 'S' and the digits."""
    ids = {codec.safe, codec.unsafe, codec.eot}
    for text in ["\n", ",", "S"] + [str(i) for i in range(15)]:
        ids.update(codec.hf.encode(text, add_special_tokens=False))
    return sorted(ids)


def qat_prepare(model, group_size: int, scheme: str = "8da4w"):
    """Wrap every linear but lm_head in the fake quantizers of ``scheme`` (guard.quantize.linear_config)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    from guard.quantize import linear_config

    base = linear_config(scheme, group_size)
    quantize_(model, QATConfig(base, step="prepare"), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)
    return model


def bake_fake_quant(model):
    """Apply each weight fake quantizer once and switch it off (it is a pure function of the weight): the model then
    computes what the converted one does, with only the activations fake-quantized per call. For evaluation."""
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "weight_fake_quantizer", None) is not None:
                m.weight.copy_(m.weight_fake_quantizer(m.weight))
                m.weight_fake_quantizer.enabled = False
    return model


def strip_fake_quant(model):
    """Replace FakeQuantizedLinear by plain nn.Linear with the trained float weights (so save_pretrained works)."""
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if type(child).__name__ == "FakeQuantizedLinear":
                lin = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                lin.weight = child.weight
                lin.bias = child.bias
                setattr(mod, cname, lin)
    return model


def distill(student_dir: str | Path, teacher_dir: str | Path | None, records: list[dict], out: str | Path, cfg: DistillConfig,
            codec_specials: dict | None = None, work: str | Path | None = None, policy=None, snapshot=None) -> dict:
    """Distil; checkpoints go to ``work`` (default OUT.work) so a rerun resumes (``snapshot``: an AdapterSnapshot, see
    ``finetune``); OUT is written atomically at the end."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not records:
        raise GuardError("empty dataset: nothing to distil on")
    from guard.model.checkpoint import check_model_dir

    for d in (student_dir, teacher_dir):  # one-line errors, and safetensors only (never unpickle a .bin)
        if d is not None:
            check_model_dir(d)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GuardError(f"{out} exists and is not empty; choose a new output directory")
    s_tok = AutoTokenizer.from_pretrained(str(student_dir))
    teacher = None
    if teacher_dir is not None:  # None: plain fine-tuning on the labels
        check_same_tokenizer(s_tok, AutoTokenizer.from_pretrained(str(teacher_dir)))
        teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(str(student_dir), dtype=torch.float32)
    codec = GuardCodec(s_tok, codec_specials)
    if cfg.qat_group_size:
        qat_prepare(student, cfg.qat_group_size, cfg.qat_scheme)
    if cfg.init_adapter and not cfg.lora:
        raise GuardError("init_adapter continues LoRA adapters: set lora as well")
    if cfg.init_adapter and not Path(cfg.init_adapter).is_file():
        raise GuardError(f"adapter file not found: {cfg.init_adapter}")
    if cfg.lora:
        add_lora(student, cfg.lora)
        if cfg.init_adapter:
            load_adapter(student, cfg.init_adapter)
    work = Path(work) if work else out.with_name(out.name + ".work")
    summary = finetune(student, codec, records, work, cfg.train, policy=policy, teacher=teacher,
                       kl_ids=guard_token_ids(codec), alpha=cfg.alpha, snapshot=snapshot)
    adapter = None
    if cfg.lora:
        adapter = lora_state_dict(student, list(cfg.lora.train_embeddings))
        merge_lora(student)  # W + scale * B @ A: the weight the QAT fake quantization saw
    strip_fake_quant(student)
    record = {"student": str(student_dir), "teacher": None if teacher_dir is None else str(teacher_dir), "records": len(records), "summary": summary,
              "config": asdict(cfg), "qat": None if not cfg.qat_group_size else
              {"scheme": cfg.qat_scheme, "group_size": cfg.qat_group_size,
               "weight": "int4 symmetric per-group" if cfg.qat_scheme == "8da4w" else "int8 symmetric per-channel",
               "activation": "int8 dynamic per-token asymmetric", "convert": f"guard export --quant {cfg.qat_scheme}"}}
    save_atomic(student, s_tok, out, record, "distill_record.json", extra={"adapter.safetensors": adapter} if adapter else None)
    return record
