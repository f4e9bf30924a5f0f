"""Fine-tuning a causal LM into a guard: Llama Guard 3 prompt, verdict targets, loss only on the verdict tokens.

Cost control for a CPU: the policy head of the prompt (~300 tokens, identical for every example of a role) is run
without gradients and its KV cache reused for ``head_refresh`` steps; only the conversation, the closing
instruction and the verdict are run with gradients, and the output layer is applied only at verdict positions.
Checkpoints (model + optimizer + step) are written atomically every ``save_every`` steps and resumed from.
Runs unchanged under ``torchrun`` (DDP, gloo on CPU): each rank takes every world_size-th example.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from guard.format.categories import Policy, covered_codes
from guard.errors import GuardError
from guard.train.lora import shared_weights
from guard.format.prompt import END_HEADER, EOT, START_HEADER, body_plain, conversation, head_text, role_of
from guard.format.tokenizer import BOS
from guard.runtime.eager import bf16_native

log = logging.getLogger(__name__)
CHATML = {BOS: None, START_HEADER: "<|im_start|>", END_HEADER: "\n", EOT: "<|im_end|>"}  # Llama 3 -> SmolLM2 chat tokens
UNSAFE_TOKEN = "unsafe"  # SmolLM2 splits "unsafe"; the guard needs it as one token (added, not special)


@dataclass
class TrainConfig:
    steps: int = 400
    lr: float = 3e-5
    accum: int = 4  # examples per optimizer step
    save_every: int = 40
    head_refresh: int = 16  # recompute the no-grad policy-head KV every this many examples
    seed: int = 0
    bf16: bool = True  # bf16 autocast where the CPU multiplies bf16 natively (bf16_native); float32 elsewhere
    decay_from: int | None = None  # constant lr until this step, then linear decay to 0 at ``steps`` (None: constant)
    category_weight: float = 1.0  # weight of the category tokens' mean CE against the decision token's (verdict_loss)

    def __post_init__(self):
        if self.decay_from is not None and not 0 <= self.decay_from < self.steps:
            raise GuardError(f"--decay-from {self.decay_from} out of range: choose 0..{self.steps - 1} (below --steps)")


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based). A function of the step alone, so a resumed run and a
    run with more ``steps`` and the same ``decay_from`` repeat the same rates up to ``decay_from``."""
    if cfg.decay_from is None or step < cfg.decay_from:
        return cfg.lr
    return cfg.lr * (cfg.steps - step) / max(cfg.steps - cfg.decay_from, 1)


class GuardCodec:
    """Prompt and verdict token ids for a Hugging Face tokenizer, Llama 3 specials mapped by ``specials``."""

    def __init__(self, hf_tok, specials: dict | None = None):
        self.hf = hf_tok
        self.specials = specials  # None: the tokenizer has the Llama 3 specials itself
        self.eot = self._special(EOT)
        self.blank = self._single("\n\n")
        self.safe, self.unsafe = self._single("safe"), self._single(UNSAFE_TOKEN)

    def _special(self, s: str) -> int | None:
        name = self.specials[s] if self.specials else s
        if name is None:
            return None
        i = self.hf.convert_tokens_to_ids(name)
        if i is None or i == self.hf.unk_token_id and name != self.hf.unk_token:
            return self._single(name)  # a plain-text mapping such as "\n"
        return i

    def _single(self, text: str) -> int:
        ids = self.hf.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise GuardError(f"the tokenizer splits {text!r} into {len(ids)} tokens; the guard needs one")
        return ids[0]

    def _text(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False, split_special_tokens=True)

    def prompt(self, messages, policy: Policy) -> tuple[list[int], list[int]]:
        """(head, body): head is the cacheable policy prefix, body ends with the assistant header.

        Built like guard.format.prompt.encode: template tokens by id, every piece of text (conversation and category
        descriptions) as plain text, so a message that spells a template token cannot forge one."""
        msgs = conversation(messages)
        head = head_text(policy, role_of(msgs))
        rest = head[head.index(END_HEADER) + len(END_HEADER):]
        body = body_plain(msgs)
        return (self._ids(BOS, START_HEADER) + self._text("user") + self._ids(END_HEADER) + self._text(rest),
                self._text(body) + self._ids(EOT, START_HEADER) + self._text("assistant") + self._ids(END_HEADER))

    def _ids(self, *names: str) -> list[int]:
        return [i for i in (self._special(n) for n in names) if i is not None]

    def target(self, label: str, categories: list[str]) -> list[int]:
        """Tokens generated after the fed blank line: 'safe<eot>' or 'unsafe\\nS1,S10<eot>'."""
        if label == "safe":
            return [self.safe, self.eot]
        return [self.unsafe] + self._text("\n" + ",".join(categories)) + [self.eot]


LLAMA3_FROM_CHATML = {BOS: "<|endoftext|>", START_HEADER: "<|im_start|>", END_HEADER: "\n", EOT: "<|im_end|>"}


def adopt_llama3_specials(model, hf_tok, init: dict | None = None) -> list[int]:
    """Give a ChatML model (SmolLM2) the Llama 3 header tokens and a single 'unsafe' token, so the exact Llama Guard 3
    prompt runs on it unchanged. Each new row starts as the token that plays the same part in the model's own chat
    template (``LLAMA3_FROM_CHATML``): at step 0 the model reads the Llama Guard prompt as its own ChatML.
    Returns the new token ids (their embedding rows are trained). ``init={}`` adds the 'unsafe' token alone and
    keeps the model's own template (GuardCodec(tok, CHATML))."""
    init = LLAMA3_FROM_CHATML if init is None else init
    new = [t for t in init if hf_tok.convert_tokens_to_ids(t) in (None, hf_tok.unk_token_id)]
    hf_tok.add_special_tokens({"additional_special_tokens": new}, replace_additional_special_tokens=False)
    pieces = hf_tok.encode(UNSAFE_TOKEN, add_special_tokens=False)
    if len(pieces) > 1:
        hf_tok.add_tokens([UNSAFE_TOKEN])
    model.resize_token_embeddings(len(hf_tok), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    ids = []
    with torch.no_grad():
        for t in new:
            src = hf_tok.encode(init[t], add_special_tokens=False, split_special_tokens=False)
            i = hf_tok.convert_tokens_to_ids(t)
            emb[i] = emb[src].mean(0)
            ids.append(i)
        if len(pieces) > 1:
            i = hf_tok.convert_tokens_to_ids(UNSAFE_TOKEN)
            emb[i] = emb[pieces].mean(0)
            ids.append(i)
    if init:
        hf_tok.bos_token, hf_tok.eos_token = BOS, EOT
        model.config.bos_token_id, model.config.eos_token_id = hf_tok.convert_tokens_to_ids(BOS), hf_tok.convert_tokens_to_ids(EOT)
    return ids


def policy_categories(categories: list[str], policy: Policy) -> list[str]:
    """Label codes -> the keys shown by ``policy`` (for training prompts whose policy lacks some label codes)."""
    shown = {c.code: k for k, c in policy.shown}
    return [shown[c] for c in covered_codes(categories, policy)]


def make_example(codec: GuardCodec, rec: dict, policy: Policy):
    msgs = conversation(rec["messages"])
    head, body = codec.prompt(msgs, policy)
    cats = policy_categories(rec.get("categories", []), policy)
    # unsafe only under categories the policy does not show -> safe under this policy (Llama Guard's exclusion rule)
    label = "safe" if rec["label"] == "unsafe" and rec.get("categories") and not cats else rec["label"]
    return head, body + [codec.blank], codec.target(label, cats)


def verdict_loss(model, head_cache, body: list[int], target: list[int], start: int, category_weight: float = 1.0):
    """CE on the verdict tokens only; the output layer is applied at len(target) positions. Returns (loss, logits).

    The decision token (safe/unsafe) weighs as much as the rest of the verdict together: a plain mean over the
    target would weigh it 1/2 in 'safe<eot>' but ~1/6 in 'unsafe\nS1,S10<eot>', which measurably taught a guard to
    under-call unsafe (guard-mini's first teacher: recall 0.32, precision 0.92 at threshold 0.5). ``category_weight``
    scales the rest (newline, "S", the code digits, end of turn): at 1 the digits that carry the hazard code get about
    a quarter of the decision's weight."""
    ids = torch.tensor([body + target[:-1]])
    pos = torch.arange(start, start + ids.shape[1])[None]
    out = model.model(input_ids=ids, past_key_values=head_cache, position_ids=pos, use_cache=True)
    h = out.last_hidden_state[0, len(body) - 1:]  # positions predicting each target token
    logits = model.lm_head(h).float()
    ce = F.cross_entropy(logits, torch.tensor(target), reduction="none")
    return (ce[0] + category_weight * ce[1:].mean() if len(target) > 1 else ce[0]), logits


def kl_columns(student: torch.Tensor, teacher: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """KL(teacher || student) of the distributions restricted to columns ``ids``; logits [T, V] -> scalar."""
    s = F.log_softmax(student[:, ids].float(), -1)
    t = F.log_softmax(teacher[:, ids].float(), -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class TrainingStopped(GuardError):
    """A run stopped by SIGTERM or SIGINT at the end of a step, after saving its checkpoint."""


@contextmanager
def _stop_requests(enabled: bool):
    """While training, SIGTERM and SIGINT ask for a stop at the end of the current step (the checkpoint is saved
    first, so nothing is lost); a second signal stops at once. Only in the main thread of a single-process run."""
    got: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if got:
            raise KeyboardInterrupt
        got.append(signum)
        log.warning("signal %d: stopping after this step's checkpoint (again to stop at once)", signum)

    for s in old:
        signal.signal(s, handler)
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _eager_attention(model):
    """Train with eager attention, faster than SDPA's flash kernel on CPU at these lengths (docs/compression.md); the
    model's own setting comes back after, also when the run stops."""
    attn = getattr(model.config, "_attn_implementation", None)
    swap = attn == "sdpa" and hasattr(model, "set_attn_implementation")
    if swap:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if swap:
            model.set_attn_implementation(attn)


def _head_cache(model, head: list[int]):
    with torch.no_grad():
        return model(input_ids=torch.tensor([head]), use_cache=True).past_key_values


def _save(out: Path, model, opt, step: int, cfg: TrainConfig) -> None:
    tmp = out / "ckpt.pt.tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "config": asdict(cfg)}, tmp)
    os.replace(tmp, out / "ckpt.pt")


def finetune(model, codec: GuardCodec, records: list[dict], out: str | Path, cfg: TrainConfig, policy=None,
             progress: bool = True, teacher=None, kl_ids: list[int] | None = None, alpha: float = 0.5,
             snapshot=None) -> dict:
    """Full fine-tuning on labelled records; resumes from ``out/ckpt.pt``. Returns a summary dict. SIGTERM or SIGINT
    saves the checkpoint at the end of the current step and raises TrainingStopped: the same call resumes it.

    With ``teacher``: loss = alpha * CE(labels) + (1 - alpha) * KL(teacher || student) over the ``kl_ids`` columns
    (the guard's tokens) at every verdict position (distillation). ``snapshot`` (a ``guard.train.lora.AdapterSnapshot``)
    is written at every checkpoint, and resumed from when ``out/ckpt.pt`` is missing (a run moved to another machine)."""
    if not records:
        raise GuardError("empty dataset: nothing to train on")
    # a list of policies: each record is shown under one of them, chosen by a seeded hash of its index, so the
    # guard learns to read the category list (e.g. the 1B list S1-S13 and the 8B list S1-S14)
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy or Policy()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():  # torchrun sets the rendezvous env; gloo on CPU, nccl when CUDA is there
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    step = 0
    if (out / "ckpt.pt").is_file():
        try:
            ck = torch.load(out / "ckpt.pt", weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            step = ck["step"]
        except Exception as e:  # truncated, not a checkpoint, or another model's layout
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise GuardError(f"cannot resume from {out / 'ckpt.pt'} ({reason}); move it away to start this run "
                             "over") from None
        log.info("resumed from step %d", step)
    elif snapshot is not None and snapshot.step() is not None:
        step = snapshot.load(model, out / "log.jsonl")
        log.warning("resumed from step %d of %s (no %s: optimizer moments restart)", step, snapshot.path, out / "ckpt.pt")
    order = list(range(len(records)))
    random.Random(cfg.seed).shuffle(order)
    model.train()
    caches: dict = {}
    t_caches: dict = {}
    losses, t0, step0 = [], time.time(), step
    bf16 = cfg.bf16 and bf16_native()
    if cfg.bf16 and not bf16:
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): training in float32, not bf16 autocast")
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    with _stop_requests(world == 1) as stop, _eager_attention(model):
        while step < cfg.steps:
            opt.zero_grad(set_to_none=True)
            total = 0.0
            # QAT adapters: fake-quantize each merged weight once per step, not per example
            with shared_weights(model):
                for a in range(cfg.accum):
                    i = order[((step * cfg.accum + a) * world + rank) % len(order)]
                    pol = policies[random.Random(cfg.seed * 1_000_003 + i).randrange(len(policies))]
                    head, body, target = make_example(codec, records[i], pol)
                    key = tuple(head)
                    if key not in caches or (step * cfg.accum + a) % cfg.head_refresh == 0:
                        caches[key] = _head_cache(model, head)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        loss, logits = verdict_loss(model, copy.deepcopy(caches[key]), body, target, len(head),
                                                    cfg.category_weight)
                    if teacher is not None:
                        if key not in t_caches:  # the teacher is frozen: its head KV never changes
                            t_caches[key] = _head_cache(teacher, head)
                        with torch.no_grad():
                            _, t_logits = verdict_loss(teacher, copy.deepcopy(t_caches[key]), body, target, len(head))
                        loss = alpha * loss + (1 - alpha) * kl_columns(logits, t_logits, kl_ids)
                    (loss / cfg.accum).backward()
                    total += loss.item() / cfg.accum
            if world > 1:
                _allreduce_grads(model, world)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            opt.step()
            step += 1
            losses.append(total)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps or stop):
                _save(out, model, opt, step, cfg)
                recent = losses[-cfg.save_every:]
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": sum(recent) / len(recent),
                                        "lr": lr_at(cfg, step - 1), "elapsed_s": round(time.time() - t0, 1),
                                        "s_per_step": round((time.time() - t0) / (step - step0), 2),
                                        "loadavg": os.getloadavg()[0], "bf16": bf16}) + "\n")
                if snapshot is not None:
                    snapshot.save(model, step, out / "log.jsonl")
            if stop and step < cfg.steps:
                if bar:
                    bar.close()
                raise TrainingStopped(f"stopped by signal {stop[0]} at step {step} of {cfg.steps}; the checkpoint in "
                                      f"{out} resumes it: run the same command again")
    if bar:
        bar.close()
    model.eval()
    return {"steps": step, "last_loss": losses[-1] if losses else None, "seconds": round(time.time() - t0, 1)}


def _allreduce_grads(model, world: int) -> None:
    """Average gradients over ranks (what DDP does; plain all_reduce keeps the cached-head forward simple)."""
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
