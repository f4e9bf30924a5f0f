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

from guard.train.data import load_jsonl
from guard.train.loop import CHATML, GuardCodec, TrainConfig, adopt_llama3_specials, finetune, make_example, verdict_loss
from guard.format.categories import Policy


def load(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    adopt_llama3_specials(model, tok, init={})  # the 'unsafe' token only: this teacher keeps ChatML
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
    ap.add_argument("--eval-only", default=None, metavar="MODEL_DIR", help="score this trained dir, write --out.json/.md")
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = Path(a.out)
    if a.eval_only:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(a.eval_only)
        model = AutoModelForCausalLM.from_pretrained(a.eval_only, dtype=torch.float32).eval()
        return evaluate(model, GuardCodec(tok, CHATML), Policy(), a.data, a.eval, out, {"model": a.eval_only})
    model, tok = load(a.base)
    codec = GuardCodec(tok, CHATML)
    policy = Policy()
    train = load_jsonl(Path(a.data) / "train.jsonl")
    summary = finetune(model, codec, train, out, TrainConfig(steps=a.steps))
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    evaluate(model, codec, policy, a.data, a.eval, out / "metrics", {"train": summary, "model": str(out / "model")})


def evaluate(model, codec, policy, data, n, stem, extra):
    """First-token verdicts on the first n test records, scored by guard.eval.evaluate.metrics; writes STEM.json/.md."""
    from guard.bench.schema import environment
    from guard.eval.evaluate import metrics, to_markdown

    test = load_jsonl(Path(data) / "test.jsonl")[:n]
    t0 = time.time()
    p = score(model, codec, test, policy)
    dt = (time.time() - t0) * 1e3 / len(test)
    preds = [{"unsafe": x >= 0.5, "p_unsafe": x, "categories": [], "latency_ms": dt} for x in p]
    name = extra.get("model", "model")
    report = {"data": str(Path(data) / "test.jsonl"), "split": "test", "n": len(test), "models": {name: metrics(test, preds)},
              "environment": environment(), "command": "python " + " ".join(sys.argv), **extra,
              "note": "first-token verdicts (safe vs unsafe logit) with the ChatML-mapped prompt; categories not decoded"}
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    Path(str(stem) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(str(stem) + ".md").write_text(to_markdown(report))
    print(to_markdown(report))

if __name__ == "__main__":
    sys.exit(main())
