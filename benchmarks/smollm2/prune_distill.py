"""Issue #4 experiment: prune SmolLM2-135M-Instruct, distil it back toward the unpruned model on text, measure.

    python benchmarks/smollm2/prune_distill.py --base /work/guard_models/smollm2-135m-instruct \
        --text-root ../shared/data --drop-blocks 6 --mlp-width 1280 --steps 60 --out benchmarks/results/smollm2_prune_distill

Metrics on held-out text (never trained on): top-1 next-token agreement with the teacher and mean KL(teacher || student)
per token over the full vocabulary, for: prune only, prune + distil, prune + distil with QAT (8da4w, converted).
Distillation text: Dolly human answers (train half); evaluation text: GSM8K questions + the other half of Dolly.
"""

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from guard.bench.schema import write_result
from guard.train.distill import qat_prepare, strip_fake_quant
from guard.train.prune import PruneConfig, prune_model
from guard.quantize import quantize_linears


def texts(root: Path, n_train: int, n_eval: int):
    dolly = [json.loads(l)["text"] for l in open(root / "dolly_partial/google_flan-t5-small_decode_output.jsonl")]
    dolly = [t for t in dolly if len(t) > 300]
    gsm = [json.loads(l)["question"] for l in open(root / "gsm8k/test.jsonl")]
    return dolly[:n_train], dolly[-n_eval // 2:] + gsm[: n_eval - n_eval // 2]


def batches(tok, items, seq):
    return [torch.tensor([tok.encode(t, add_special_tokens=False)[:seq]]) for t in items]


@torch.no_grad()
def compare(student, teacher, data):
    agree = total = 0
    kl = 0.0
    for ids in data:
        t = teacher(input_ids=ids).logits[0].float()
        s = student(input_ids=ids).logits[0].float()
        agree += (t.argmax(-1) == s.argmax(-1)).sum().item()
        kl += F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum").item()
        total += ids.shape[1]
    return {"top1_agreement": agree / total, "kl_per_token": kl / total, "tokens": total}


def distil_text(student, teacher, data, steps, lr):
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr)
    student.train()
    losses = []
    for step in range(steps):
        ids = data[step % len(data)]
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[0].float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s = student(input_ids=ids).logits[0]
        loss = F.kl_div(F.log_softmax(s.float(), -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    student.eval()
    return losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--text-root", default="../shared/data")
    ap.add_argument("--drop-blocks", type=int, default=6)
    ap.add_argument("--mlp-width", type=int, default=1280)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--qat-group", type=int, default=32)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.base)
    teacher = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32).eval()
    train_t, eval_t = texts(Path(a.text_root), max(a.steps, 1), a.n_eval)
    train, held = batches(tok, train_t, a.seq), batches(tok, eval_t, a.seq)
    pruned = copy.deepcopy(teacher)
    record = prune_model(pruned, PruneConfig(drop_blocks=a.drop_blocks, mlp_width=a.mlp_width, calib=train_t[:16]), tok)
    res = {"prune": {k: record[k] for k in ("removed_blocks", "blocks_after", "mlp_width_after", "parameters_after")},
           "parameters_teacher": sum(p.numel() for p in teacher.parameters())}
    t0 = time.time()
    res["prune_only"] = compare(pruned, teacher, held)
    student = copy.deepcopy(pruned)
    res["prune_distil_losses"] = distil_text(student, teacher, train, a.steps, a.lr)[:: max(a.steps // 10, 1)]
    res["prune_distil"] = compare(student, teacher, held)
    qat = qat_prepare(copy.deepcopy(pruned), a.qat_group)
    distil_text(qat, teacher, train, a.steps, a.lr)
    strip_fake_quant(qat)
    names = {n for n, m in qat.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    quantize_linears(qat, "8da4w", a.qat_group, names)
    res["prune_distil_qat_int4"] = compare(qat, teacher, held)
    ptq = copy.deepcopy(student)  # reference: distil without QAT, then PTQ
    quantize_linears(ptq, "8da4w", a.qat_group, names)
    res["prune_distil_then_ptq_int4"] = compare(ptq, teacher, held)
    res.update({"seconds": round(time.time() - t0, 1), "steps": a.steps, "seq": a.seq, "lr": a.lr, "n_eval_texts": len(held),
                "command": "python " + " ".join(sys.argv), "loadavg": os.getloadavg(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "torch": torch.__version__})
    out = Path(a.out)
    rows = [("prune only", "prune_only"), ("prune + distil", "prune_distil"), ("prune + distil + QAT INT4 (converted)", "prune_distil_qat_int4"),
            ("prune + distil, then PTQ INT4 (reference)", "prune_distil_then_ptq_int4")]
    md = [f"# SmolLM2-135M-Instruct: prune blocks {res['prune']['removed_blocks']} (of {record['blocks_before']}), MLP 1536 -> {a.mlp_width}", "",
          f"Parameters {res['parameters_teacher']:,} -> {res['prune']['parameters_after']:,}. Held-out text: {len(held)} texts, "
          f"{res['prune_only']['tokens']} tokens; distillation: {a.steps} steps x 1 text of <= {a.seq} tokens, lr {a.lr}.", "",
          "| model | top-1 agreement with teacher | KL(teacher‖student) per token |", "|---|---|---|"]
    md += [f"| {name} | {res[k]['top1_agreement']:.3f} | {res[k]['kl_per_token']:.3f} |" for name, k in rows]
    md += ["", f"Command: `{res['command']}`", f"Machine: {res['machine']}, {res['cpus']} CPUs, torch {res['torch']}, "
           f"load average {res['loadavg']} (shared with other agents), {res['seconds']} s.", ""]
    write_result(out, res, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
