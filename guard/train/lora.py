"""LoRA for the guard's training stages: low-rank adapters on the linear layers, mergeable and QAT-aware.

``add_lora(model, LoraConfig(r=16))`` wraps every matching ``nn.Linear`` (attention and MLP projections) in a
``LoRALinear`` and freezes everything else. Two forward forms:

- plain: ``base(x) + scale * (x @ A.T) @ B.T``: no gradient for the frozen weight, the cheap form for fine-tuning;
- merged, used when the base linear is a torchao ``FakeQuantizedLinear`` (QAT): ``linear(fq_act(x), fq_w(W + scale * B @ A))``,
  so the INT4 fake quantization sees the same merged weight that ``merge_lora`` and the exporter will quantize.

In the merged form, ``shared_weights(model)`` computes ``fq_w(W + scale * B @ A)`` once per optimizer step instead of
once per example: the adapters do not change between the examples a step accumulates, and the weight fake
quantization dominated QAT's cost (a few seconds per example for guard-mini on this CPU).

``LoraConfig.train_embeddings`` rows (new tokens) train too, as a small parameter shared by the embedding and the
output layer tied to it (``TrainedRows``). ``merge_lora`` folds the adapters into plain ``nn.Linear`` weights and the
rows into the embedding; ``lora_state_dict`` / ``load_lora`` save and restore the adapters alone (a few MB), which is
how guard-mini is shipped.
"""

from __future__ import annotations

import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from guard.errors import GuardError

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = TARGETS
    train_embeddings: tuple[int, ...] = ()  # embedding rows that stay trainable (e.g. newly added tokens)

    def check(self) -> None:
        if self.r <= 0:
            raise GuardError(f"LoRA rank must be positive, got {self.r}")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.shared: torch.Tensor | None = None  # set by shared_weights: this step's fake-quantized merged weight
        self._half: tuple | None = None  # (key, the frozen weight in the autocast dtype): cast once, not per call
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A)

    @property
    def merged_form(self) -> bool:
        return getattr(self.base, "weight_fake_quantizer", None) is not None

    def merged_weight(self) -> torch.Tensor:
        """fq_w(W + scale * B @ A): the weight the merged (QAT) form multiplies by."""
        return self.base.weight_fake_quantizer(self.base.weight + self.delta())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        if not self.merged_form:  # plain form: no weight gradient for the frozen base
            lora = F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
            return self._frozen(x) + self.scale * lora
        aq = getattr(base, "activation_fake_quantizer", None)
        if aq is not None:
            x = aq(x)
        return F.linear(x, self.merged_weight() if self.shared is None else self.shared, base.bias)

    def _frozen(self, x: torch.Tensor) -> torch.Tensor:
        """base(x). Under CPU autocast the frozen weight is cast to the autocast dtype once and kept (keyed by the
        weight's identity and version), where autocast would cast it again on every call (a tenth of a bf16 step)."""
        w = self.base.weight
        if w.requires_grad or not torch.is_autocast_enabled("cpu"):
            return self.base(x)
        dtype = torch.get_autocast_dtype("cpu")
        key = (w.data_ptr(), w._version, dtype)
        if self._half is None or self._half[0] != key:
            self._half = (key, w.detach().to(dtype))
        bias = None if self.base.bias is None else self.base.bias.to(dtype)
        return F.linear(x.to(dtype), self._half[1], bias)


@contextmanager
def shared_weights(model: nn.Module):
    """One optimizer step's worth of forwards and backwards with each merged-form weight computed once.

    On entry ``fq_w(W + scale * B @ A)`` is computed for every merged-form LoRALinear and handed to the forwards as
    a detached leaf, so the examples accumulate the gradient of that weight. On a normal exit that gradient is
    backpropagated once through the fake quantizer and the merge into A and B. The gradients equal those of the
    per-example form (a sum, up to float rounding order) because both backward maps are linear in the incoming
    gradient. A no-op for models without merged-form adapters."""
    mods = [m for m in model.modules() if isinstance(m, LoRALinear) and m.merged_form]
    graphs = []
    for m in mods:
        w = m.merged_weight()
        m.shared = w.detach().requires_grad_(w.requires_grad)
        graphs.append((w, m.shared))
    try:
        yield
    finally:
        for m in mods:
            m.shared = None
    pairs = [(w, leaf.grad) for w, leaf in graphs if w.requires_grad and leaf.grad is not None]
    if pairs:
        torch.autograd.backward([w for w, _ in pairs], [g for _, g in pairs])


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


def add_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Freeze ``model`` and wrap target linears with LoRA adapters (in place)."""
    cfg.check()
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in cfg.targets]
    if not names:
        raise GuardError(f"no linear layer named {', '.join(cfg.targets)} to put LoRA adapters on")
    for n in names:
        parent, child = _parent(model, n)
        setattr(parent, child, LoRALinear(getattr(parent, child), cfg.r, cfg.alpha))
    if cfg.train_embeddings:
        _train_rows(model, list(cfg.train_embeddings))
    return model


class TrainedRows(nn.Module):
    """An embedding, or the output layer tied to it, of which only ``rows`` train: they live in a small parameter
    shared by both, so a backward never builds (or masks) the dense vocab x hidden gradient of the whole matrix
    (about a fifth of a rank-64 teacher step on SmolLM2's 49K vocabulary)."""

    def __init__(self, base: nn.Module, rows: list[int], weight: nn.Parameter, output: bool):
        super().__init__()
        self.base, self.output, self.weight_rows = base, output, weight
        self.register_buffer("rows", torch.tensor(rows), persistent=False)
        lookup = torch.full((base.weight.shape[0],), -1, dtype=torch.long)
        lookup[rows] = torch.arange(len(rows))
        self.register_buffer("lookup", lookup, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The whole matrix as it now is (a copy with the trained rows in place)."""
        return self.base.weight.index_copy(0, self.rows, self.weight_rows.to(self.base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.output:  # logits: the trained rows' columns recomputed from the parameter
            return y.index_copy(-1, self.rows, F.linear(x, self.weight_rows.to(x.dtype)).to(y.dtype))
        idx = self.lookup[x]
        return torch.where((idx >= 0)[..., None], self.weight_rows[idx.clamp(min=0)].to(y.dtype), y)


def _train_rows(model: nn.Module, rows: list[int]) -> None:
    """Make only ``rows`` of the input embedding trainable (and of the output layer, when it is tied to it)."""
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    weight = nn.Parameter(emb.weight.detach()[rows].clone())
    tied = out is not None and out.weight is emb.weight
    model.set_input_embeddings(TrainedRows(emb, rows, weight, output=False))
    if tied:
        model.set_output_embeddings(TrainedRows(out, rows, weight, output=True))


def _untrain_rows(model: nn.Module, scale: float = 1.0) -> None:
    """Fold the trained rows back into the (tied) matrix, moved ``scale`` of the way from the rows before training,
    and put the plain modules back."""
    emb = model.get_input_embeddings()
    if not isinstance(emb, TrainedRows):
        return
    with torch.no_grad():
        rows = emb.weight_rows.to(emb.base.weight.dtype)
        if scale != 1.0:  # exactly the trained rows at 1 (before + (rows - before) may round differently)
            before = emb.base.weight[emb.rows]
            rows = before + scale * (rows - before)
        emb.base.weight[emb.rows] = rows
    model.set_input_embeddings(emb.base)
    out = model.get_output_embeddings()
    if isinstance(out, TrainedRows):
        model.set_output_embeddings(out.base)


def merge_lora(model: nn.Module, scale: float = 1.0) -> nn.Module:
    """Replace every LoRALinear by its base linear with the adapter folded into the weight (and trained embedding
    rows into the embedding).

    ``scale`` interpolates between the weights before the adapter (0) and after it (1, the default): every weight
    becomes ``W + scale * delta`` and every trained embedding row ``row0 + scale * (row - row0)``, the weight-space
    ensembling of a fine-tuned model with the one it started from (WiSE-FT, Wortsman et al. 2022)."""
    if not 0.0 <= scale <= 1.0:
        raise GuardError(f"adapter scale {scale} is outside 0..1")
    _untrain_rows(model, scale)
    for n, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.base.weight += scale * m.delta()
            parent, child = _parent(model, n)
            setattr(parent, child, m.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module, rows: list[int] = ()) -> dict[str, torch.Tensor]:
    """The adapters (and the given trainable embedding rows) alone."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_A" in k or "lora_B" in k}
    if rows:
        emb = model.get_input_embeddings().weight.detach()
        sd["embedding_rows.index"] = torch.tensor(list(rows))
        sd["embedding_rows.weight"] = emb[list(rows)].clone()
    return sd


def load_lora(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load adapters saved by ``lora_state_dict`` into a model that ``add_lora`` prepared the same way."""
    sd = dict(sd)
    rows = sd.pop("embedding_rows.index", None)
    w = sd.pop("embedding_rows.weight", None)
    missing = set(sd) - set(model.state_dict())
    if missing:
        raise GuardError(f"adapter keys not in the model: {sorted(missing)[:3]}...")
    model.load_state_dict(sd, strict=False)
    if rows is not None:
        emb = model.get_input_embeddings()
        with torch.no_grad():
            if isinstance(emb, TrainedRows):  # the rows are trained: set them where training reads them
                at = emb.lookup[rows]
                if (at < 0).any():
                    raise GuardError("the adapter's embedding rows are not the rows this model trains")
                emb.weight_rows[at] = w.to(emb.weight_rows.dtype)
            else:
                emb.weight[rows] = w.to(emb.weight.dtype)


def mix_adapters(parts: list[tuple[dict[str, torch.Tensor], float, float]]) -> tuple[dict[str, torch.Tensor], int]:
    """One adapter computing ``sum_i w_i * delta_i`` exactly, from ``parts`` = (``lora_state_dict``, its LoRA scale
    alpha / r, its weight w) of adapters trained from the same model: the weight-space average of fine-tuned models
    ("model soups", Wortsman et al., ICML 2022). The A matrices are stacked and the B matrices scaled by w * scale, so
    the result has rank sum(r_i) at scale 1 (``LoraConfig(r=rank, alpha=rank)``); trained embedding rows become
    ``sum_i w_i * row_i`` (weights summing to 1: the same mix of the rows' moves away from where they started).
    -> (state dict, rank)."""
    if len(parts) < 2:
        raise GuardError("a mix of adapters needs at least two")
    keys = {k for k in parts[0][0] if k.endswith(("lora_A", "lora_B"))}
    for sd, _, _ in parts[1:]:
        if {k for k in sd if k.endswith(("lora_A", "lora_B"))} != keys:
            raise GuardError("the adapters to mix are not on the same layers")
    out: dict[str, torch.Tensor] = {}
    for k in sorted(keys):
        if k.endswith("lora_A"):
            out[k] = torch.cat([sd[k].float() for sd, _, _ in parts], dim=0)
        else:
            out[k] = torch.cat([w * scale * sd[k].float() for sd, scale, w in parts], dim=1)
    index = [sd.get("embedding_rows.index") for sd, _, _ in parts]
    if any(i is not None for i in index):
        if any(i is None or not torch.equal(i, index[0]) for i in index):
            raise GuardError("the adapters to mix do not train the same embedding rows")
        out["embedding_rows.index"] = index[0].clone()
        out["embedding_rows.weight"] = sum(w * sd["embedding_rows.weight"].float() for sd, _, w in parts)
    return out, next(v.shape[0] for k, v in out.items() if k.endswith("lora_A"))


def save_adapter(sd: dict[str, torch.Tensor], path: str | Path, dtype: torch.dtype | None = None,
                 metadata: dict[str, str] | None = None) -> None:
    """Write adapters (``lora_state_dict``) as safetensors, floats in ``dtype`` if given, atomically."""
    from safetensors.torch import save_file

    tmp = Path(path).with_suffix(".tmp")
    save_file({k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous() for k, v in sd.items()}, str(tmp),
              metadata=metadata)
    tmp.replace(path)


def read_adapter(path: str | Path) -> dict[str, torch.Tensor]:
    """An adapter file (``save_adapter``) as a state dict, in float32 whatever dtype it was saved in."""
    from safetensors.torch import load_file

    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def load_adapter(model: nn.Module, path: str | Path) -> None:
    """``load_lora`` from a safetensors file, in float32 whatever dtype it was saved in."""
    load_lora(model, read_adapter(path))


@dataclass
class AdapterSnapshot:
    """A resume point small enough to commit: the adapters and trained rows (``lora_state_dict``), the step in the
    file's metadata, and a copy of the run's log. ``finetune(..., snapshot=)`` writes it at every checkpoint and,
    when its checkpoint directory has no ckpt.pt (another machine), resumes from it; AdamW moments restart at zero."""

    path: Path
    rows: tuple[int, ...] = ()
    dtype: torch.dtype | None = None  # e.g. torch.float16: half the file
    log: Path | None = None  # where the run's log.jsonl is copied, and read back from on resume

    def step(self) -> int | None:
        from safetensors import safe_open

        if not Path(self.path).is_file():
            return None
        with safe_open(str(self.path), "pt") as f:
            return int(f.metadata()["step"])

    def load(self, model: nn.Module, run_log: Path) -> int:
        load_adapter(model, self.path)
        if self.log is not None and Path(self.log).is_file():
            shutil.copy(self.log, run_log)
        return self.step()

    def save(self, model: nn.Module, step: int, run_log: Path) -> None:
        save_adapter(lora_state_dict(model, self.rows), self.path, self.dtype, {"step": str(step)})
        if self.log is not None and run_log.is_file():
            shutil.copy(run_log, self.log)
