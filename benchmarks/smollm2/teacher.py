"""Fine-tune SmolLM2-135M-Instruct into a Llama Guard 3-format guard (the guard-mini teacher), then score it.

    python benchmarks/smollm2/teacher.py --base /work/guard_models/smollm2-135m-instruct \
        --data /work/guard_data/v1 --out /work/guard_models/teacher --steps 400
Resumable: rerun the same command after an interruption. --eval-only N scores the saved model on N test records.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from guard.data import load_jsonl
from guard.train import CHATML, GuardCodec, TrainConfig, add_unsafe_token, finetune, make_example, verdict_loss
from guard.categories import Policy


def load(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_unsafe_token(model, tok)
    return model, tok


@torch.no_grad()
def score(model, codec, records, policy):
    """p(unsafe) from the first verdict token (safe vs unsafe logits), per record."""
    model.eval()
    out = []
    for r in records:
        head, body, target = make_example(codec, r, policy)
        ids = torch.tensor([head + body])
        logits = model(input_ids=ids).logits[0, -1]
        out.append(torch.softmax(logits[[codec.safe, codec.unsafe]], 0)[1].item())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval", type=int, default=300, help="test records scored after training")
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(a.out)
    model, tok = load(a.base)
    codec = GuardCodec(tok, CHATML)
    policy = Policy()
    train = load_jsonl(Path(a.data) / "train.jsonl")
    summary = finetune(model, codec, train, out, TrainConfig(steps=a.steps))
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    test = load_jsonl(Path(a.data) / "test.jsonl")[: a.eval]
    t0 = time.time()
    p = score(model, codec, test, policy)
    y = [r["label"] == "unsafe" for r in test]
    pred = [x >= 0.5 for x in p]
    tp = sum(a and b for a, b in zip(pred, y)); fp = sum(a and not b for a, b in zip(pred, y)); fn = sum(b and not a for a, b in zip(pred, y))
    adj = [pr for pr, r in zip(pred, test) if r["adjacent"]]
    prec = tp / max(tp + fp, 1); rec = tp / max(tp + fn, 1)
    res = {"train": summary, "n_test": len(test), "precision": prec, "recall": rec, "f1": 2 * prec * rec / max(prec + rec, 1e-9),
           "fpr_all_safe": fp / max(sum(not b for b in y), 1), "fpr_adjacent": sum(adj) / max(len(adj), 1), "n_adjacent": len(adj),
           "eval_seconds": round(time.time() - t0, 1), "loadavg": os.getloadavg(), "torch": torch.__version__}
    (out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
