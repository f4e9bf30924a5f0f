"""`guard prune`: drop decoder blocks and MLP neurons by importance measured on calibration text.

Block importance = mean (1 - cosine similarity) between a block's input and output hidden states: a block that
barely changes its input is the cheapest to remove (ShortGPT's Block Influence). MLP neuron importance = mean
absolute activation (act(gate) * up) entering down_proj, summed over layers' own neurons. The output vocabulary
is pruned at export time (guard export --prune-vocab keeps only the guard's tokens) so the directory stays a plain,
loadable Hugging Face checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from guard.errors import GuardError
from guard.fsutil import save_atomic


@dataclass
class PruneConfig:
    drop_blocks: int = 0  # how many blocks to remove by measured importance
    blocks: list[int] | None = None  # explicit block indices to remove (overrides drop_blocks)
    mlp_width: int | None = None  # new intermediate size (None: keep)
    calib: list[str] = field(default_factory=list)  # calibration texts
    max_tokens: int = 256


@torch.no_grad()
def measure(model, batches: list[torch.Tensor]) -> tuple[list[float], list[torch.Tensor]]:
    """Return (block scores [L], per-layer neuron scores [L][intermediate]) averaged over calibration tokens."""
    layers = model.model.layers
    blocks = [0.0] * len(layers)
    neurons = [torch.zeros(l.mlp.down_proj.in_features) for l in layers]
    count = [0]
    hooks = []
    for i, layer in enumerate(layers):
        def block_hook(mod, args, kwargs, out, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            blocks[i] += (1 - torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)).sum().item()

        def mlp_hook(mod, args, i=i):
            neurons[i] += args[0].detach().float().abs().sum(dim=(0, 1))

        hooks.append(layer.register_forward_hook(block_hook, with_kwargs=True))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(mlp_hook))
    try:
        for ids in batches:
            model(input_ids=ids)
            count[0] += ids.numel()
    finally:
        for h in hooks:
            h.remove()
    n = max(count[0], 1)
    return [b / n for b in blocks], [v / n for v in neurons]


def _check(cfg: PruneConfig, n_layers: int, width: int) -> list[int] | None:
    explicit = None
    if cfg.blocks is not None:
        bad = [b for b in cfg.blocks if not 0 <= b < n_layers]
        if bad:
            raise GuardError(f"blocks {bad} out of range: the model has blocks 0..{n_layers - 1}")
        if len(set(cfg.blocks)) >= n_layers:
            raise GuardError(f"cannot remove all {n_layers} blocks")
        explicit = sorted(set(cfg.blocks))
    elif not 0 <= cfg.drop_blocks < n_layers:
        raise GuardError(f"--drop-blocks {cfg.drop_blocks} out of range: choose 0..{n_layers - 1} for a {n_layers}-block model")
    if cfg.mlp_width is not None and not 0 < cfg.mlp_width <= width:
        raise GuardError(f"--mlp-width {cfg.mlp_width} out of range: choose 1..{width} (current width)")
    return explicit


@torch.no_grad()
def prune_model(model, cfg: PruneConfig, tokenizer=None) -> dict:
    """Prune ``model`` in place; return the record of what was removed and why."""
    layers = model.model.layers
    n, width = len(layers), model.config.intermediate_size
    explicit = _check(cfg, n, width)
    need = explicit is None and cfg.drop_blocks > 0 or cfg.mlp_width is not None
    scores, neurons = None, None
    if need:
        if not cfg.calib or tokenizer is None:
            raise GuardError("importance-based pruning needs calibration texts (--calib FILE)")
        batches = [torch.tensor([tokenizer.encode(t, add_special_tokens=False)[: cfg.max_tokens]]) for t in cfg.calib if t.strip()]
        scores, neurons = measure(model, batches)
    drop = explicit if explicit is not None else sorted(sorted(range(n), key=lambda i: scores[i])[: cfg.drop_blocks])
    record = {"blocks_before": n, "removed_blocks": drop, "block_scores": scores,
              "block_reason": "explicit list" if explicit is not None else "lowest mean (1 - cos(input, output)) on calibration text",
              "mlp_width_before": width, "mlp_width_after": cfg.mlp_width or width,
              "mlp_reason": "highest mean |act(gate)*up| per neuron on calibration text" if cfg.mlp_width else None,
              "calib_texts": len(cfg.calib), "config": asdict(cfg) | {"calib": len(cfg.calib)}}
    if cfg.mlp_width is not None and cfg.mlp_width < width:
        record["mlp_keep"] = {}
        for i, layer in enumerate(layers):
            keep = torch.sort(torch.topk(neurons[i], cfg.mlp_width).indices).values
            if i not in drop:
                record["mlp_keep"][str(i)] = keep.tolist()  # per original block index: replayable (guard.train.prune.apply_record)
            m = layer.mlp
            m.gate_proj = _rows(m.gate_proj, keep)
            m.up_proj = _rows(m.up_proj, keep)
            m.down_proj = _cols(m.down_proj, keep)
        model.config.intermediate_size = cfg.mlp_width
    kept = [l for i, l in enumerate(layers) if i not in drop]
    for j, l in enumerate(kept):
        l.self_attn.layer_idx = j  # the KV cache is indexed by layer
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i not in drop]
    record["blocks_after"] = len(kept)
    record["parameters_after"] = sum(p.numel() for p in model.parameters())
    return record


@torch.no_grad()
def apply_record(model, record: dict):
    """Replay a prune record (removed blocks, kept MLP neurons) on the model it was measured on."""
    drop = record["removed_blocks"]
    keep = {int(k): torch.tensor(v) for k, v in (record.get("mlp_keep") or {}).items()}
    if record.get("mlp_width_after") != record.get("mlp_width_before") and not keep:
        raise GuardError("the prune record has no mlp_keep indices; it cannot be replayed")
    if len(model.model.layers) != record["blocks_before"]:
        raise GuardError(f"the record was made on a {record['blocks_before']}-block model, this one has {len(model.model.layers)}")
    return prune_model(model, PruneConfig(blocks=drop, mlp_width=None), None) if not keep else _replay(model, drop, keep, record)


def _replay(model, drop, keep, record):
    for i, layer in enumerate(model.model.layers):
        if i in keep:
            m = layer.mlp
            m.gate_proj, m.up_proj, m.down_proj = _rows(m.gate_proj, keep[i]), _rows(m.up_proj, keep[i]), _cols(m.down_proj, keep[i])
    model.config.intermediate_size = record["mlp_width_after"]
    return prune_model(model, PruneConfig(blocks=drop, mlp_width=None), None)


def _rows(lin: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(lin.in_features, len(keep), bias=lin.bias is not None, dtype=lin.weight.dtype)
    new.weight.copy_(lin.weight[keep])
    return new


def _cols(lin: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(len(keep), lin.out_features, bias=lin.bias is not None, dtype=lin.weight.dtype)
    new.weight.copy_(lin.weight[:, keep])
    if lin.bias is not None:
        new.bias.copy_(lin.bias)
    return new


def prune(src: str | Path, out: str | Path, cfg: PruneConfig) -> dict:
    """Load a Hugging Face directory, prune it, write a new directory with prune_record.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guard.model.checkpoint import check_model_dir

    check_model_dir(src)
    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32).eval()
    record = prune_model(model, cfg, tok)
    record["source"] = str(src)
    save_atomic(model, tok, out, record)
    return record
