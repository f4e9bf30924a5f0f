"""Export stage: a Llama (guard.model.llama) -> model.pte for the ExecuTorch runtime with XNNPACK.

One program whose methods share the KV-cache buffers (``share_mutable_buffers``):
``prefill(tokens[1, chunk], pos[chunk], last[1])`` for a padded chunk, ``prefill_<n>`` for each smaller static chunk
in ``ExportConfig.chunks`` (the runtime picks sizes per remaining tokens, so little is padded), and
``decode(tokens[1, 1], pos[1], last[1])``, each with a fourth input ``keys[1, S]`` when ``ExportConfig.attention_span``
is set (attention reads cache slots 0..S-1 only). All return the logits of one position only. The weights are stored once
(XNNPACK's named data is keyed by content). Metadata lives in constant methods (see metadata.py).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from guard.errors import GuardError
from guard.export import metadata

log = logging.getLogger(__name__)


def _default_quant():
    from guard.quantize import QuantConfig  # torch: kept out of `import guard.export.metadata` (the runtime's path)

    return QuantConfig()


@dataclass
class ExportConfig:
    max_seq_len: int = 1024  # positions a conversation may use (prompt + verdict)
    chunk: int = 128  # the largest static prefill chunk (method `prefill`)
    chunks: tuple[int, ...] = (32, 8)  # smaller static chunks (methods prefill_<n>); () for `prefill` only
    prune_vocab: bool = False  # keep only the guard's output tokens
    # Store the KV cache's zero initial state in the .pte. Off by default, like ExecuTorch's llama export: the runtime
    # allocates planned memory zeroed, and with this on, prefill measured ~4x slower in the pip runtime.
    zero_cache: bool = False
    # Processes that trace and lower the methods side by side (each method is lowered on its own; lowering is
    # single-threaded Python). 0: one per core, at most one per method. The program written is the same.
    workers: int = 0
    # Attention reads only cache slots 0..S-1: every method takes key positions ``keys[1, S]`` (a dynamic dimension,
    # S <= max_seq_len) and the runtime passes the step's end rounded up to a multiple of this, so a step at position
    # p costs O(p) attention instead of O(max_seq_len). 0: attend to the whole cache (the signature before it).
    attention_span: int = 64
    quant: "QuantConfig" = field(default_factory=_default_quant)  # noqa: F821 (guard.quantize.QuantConfig)

    def check(self) -> None:
        self.quant.check()
        if not 16 <= self.max_seq_len <= 131072:
            raise GuardError(f"max_seq_len must be in [16, 131072], got {self.max_seq_len}")
        if not 1 <= self.chunk <= self.max_seq_len:
            raise GuardError(f"prefill chunk must be in [1, max_seq_len], got {self.chunk}")
        if self.workers < 0:
            raise GuardError(f"workers must be 0 (auto) or a positive count, got {self.workers}")
        if not 0 <= self.attention_span <= self.max_seq_len:
            raise GuardError(f"attention_span must be 0 (whole cache) or in [1, max_seq_len], got {self.attention_span}")
        if any(c < 2 for c in self.chunks):
            raise GuardError(f"extra prefill chunks must be at least 2 tokens (decode does 1), got {list(self.chunks)}")

    def sizes(self) -> list[int]:
        """Every static prefill size, largest first (extra chunks not smaller than ``chunk`` are dropped)."""
        return sorted({self.chunk, *(c for c in self.chunks if c < self.chunk)}, reverse=True)


def export_model(model_dir: str | Path, out_dir: str | Path, config: ExportConfig, report: dict | None = None) -> Path:
    """HF checkpoint dir -> out_dir/model.pte with tokenizer.json beside it. Returns the .pte path.

    ``report``, when given, receives {"delegation": {method: {"subgraphs": n, "portable": {op: count}}}}.
    """
    from guard.model.llama import load_hf

    def write(tok, path):
        # tokenizer.json is already beside ``path`` (export_dir copies it first): the .pte records its digest
        return export_pte(load_hf(model_dir, max_seq_len=config.max_seq_len, chunk=config.chunk), config, path, tok,
                          report, tokenizer_sha256=metadata.file_digest(Path(path).parent / "tokenizer.json"))

    return export_dir(model_dir, out_dir, config, write)


def export_dir(model_dir, out_dir, config: ExportConfig, write, files=("tokenizer.json", "tokenizer_config.json")) -> Path:
    """Check the directory and the config, read the tokenizer, copy ``files`` to out_dir (tokenizer.json at least:
    the .pte records its digest), then ``write(tok, out_dir/model.pte)``. Returns the .pte path."""
    from guard.format.tokenizer import Tokenizer
    from guard.model.checkpoint import check_model_dir

    config.check()
    check_model_dir(model_dir)
    tok = Tokenizer.from_dir(model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in files:
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, out / name)
    if not (out / "tokenizer.json").is_file():
        tok.save(out / "tokenizer.json")
    from guard.format import spec

    spec.write(out)  # the prompt template for the native runtime (android_runner/)
    return write(tok, out / "model.pte")


def prepare(model, config: ExportConfig, tok, part=None):
    """Prune the output layer and quantize ``part`` (default the whole model), in place. Returns the quantized part."""
    from guard.model.llama import prune_vocab
    from guard.quantize import load_quantized_ops, quantize

    if config.prune_vocab:
        prune_vocab(model, metadata.guard_vocab(tok))
    load_quantized_ops()
    # A pruned head has ~100 rows: it stays fp32, which keeps p_unsafe closest to the float model.
    return quantize(model if part is None else part, config.quant, skip=("lm_head",) if config.prune_vocab else ())


def export_pte(model, config: ExportConfig, path: str | Path, tok=None, report: dict | None = None,
               tokenizer_sha256: str | None = None) -> Path:
    """Prune/quantize ``model`` (a guard.model.Transformer, modified in place) and write it as a .pte.

    ``tokenizer_sha256``: the digest of the tokenizer.json that will sit beside it (export_model passes it)."""
    from guard.format.prompt import FORMAT_VERSION
    from guard.format.tokenizer import Tokenizer
    from guard.logs import quiet_third_party

    quiet_third_party()
    config.check()
    tok = tok or Tokenizer.default()
    a = model.args
    if (a.max_seq_len, a.chunk) != (config.max_seq_len, config.chunk):
        raise GuardError(f"model built for max_seq_len={a.max_seq_len}, chunk={a.chunk}; config says "
                         f"{config.max_seq_len}, {config.chunk}")
    # No constant should say requires_grad: the flag is serialized, and a method lowered in a child process
    # (guard.export.parallel) comes back without it, so one- and two-process exports would differ.
    model = prepare(model, config, tok).eval().requires_grad_(False)
    C, span = config.chunk, config.attention_span
    methods = {metadata.chunk_method(c, C): method_inputs(model, c, config.max_seq_len, span) for c in config.sizes() + [1]}
    meta = metadata.build(tok.tokens, max_seq_len=config.max_seq_len, chunk=C, vocab_size=a.vocab_size,
                          output_ids=model.output_ids, prompt_format=FORMAT_VERSION,
                          quant_scheme=config.quant.scheme, group_size=config.quant.linear_group, chunks=config.sizes(),
                          tokenizer_sha256=tokenizer_sha256, attention_span=span)
    return lower(methods, meta, path, report, zero_cache=config.zero_cache, workers=config.workers)


def method_inputs(model, c: int, max_seq_len: int, span: int) -> tuple:
    """(module, example inputs[, dynamic shapes]) of the method that prefills ``c`` tokens: tokens, pos, last and,
    with an attention span, the key positions ``keys[1, S]`` whose S is dynamic up to ``max_seq_len``."""
    import torch

    ex = (torch.zeros(1, c, dtype=torch.long), torch.arange(c), torch.tensor([c - 1]))
    if not span:
        return model, ex
    S = max(2, min(max_seq_len, c + span))  # an example length; any S in [2, max_seq_len] runs
    keys = torch.arange(S, dtype=torch.float32).view(1, -1)
    return model, ex + (keys,), (None, None, None, {1: torch.export.Dim("keys", min=2, max=max_seq_len)})


def lower(methods: dict, meta: dict, path: str | Path, report: dict | None = None, zero_cache: bool = False,
          workers: int = 0) -> Path:
    """Export each named method (name -> (module, example inputs)), lower them to XNNPACK as one program whose
    methods share their mutable buffers (the caches), with ``meta`` as constant methods, and write it atomically.
    ``report`` receives each method's delegation. ``workers``: see ExportConfig.workers (guard.export.parallel)."""
    from executorch.exir import EdgeCompileConfig, EdgeProgramManager, ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass

    from guard.export.parallel import lower_methods
    from guard.fsutil import write_atomic

    progs = lower_methods(methods, workers)
    edge = EdgeProgramManager(progs, constant_methods=meta, compile_config=EdgeCompileConfig(_check_ir_validity=False))
    report = {} if report is None else report
    report["delegation"] = {name: delegation(edge.exported_program(name)) for name in progs}
    for name, d in report["delegation"].items():
        portable = ", ".join(f"{op} x{n}" for op, n in d["portable"].items()) or "none"
        log.info("%s: %d XNNPACK subgraphs; not delegated: %s", name, d["subgraphs"], portable)
    # Unwritten cache slots are masked, but masked scores still multiply V: NaN garbage would leak through 0 * NaN.
    # The buffers are shared, so the zero state is stored with one method only (prefill, loaded first).
    if zero_cache:
        from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

        edge = edge.transform({name: [InitializedMutableBufferPass(["k_cache", "v_cache"])] if name == "prefill" else []
                               for name in progs})
    et = edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True, do_quant_fusion_and_const_prop=True, run_reinplace_pass=True,  # in-place cache writes
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
        emit_mutable_buffer_names=True))
    path = write_atomic(path, et.buffer)  # never leave a half-written model.pte
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def delegation(ep) -> dict:
    """XNNPACK subgraph count and the ops left to portable kernels (those are what can make a step slow)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(ep.graph_module)
    df = info.get_operator_delegation_dataframe()
    rest = df[(df.iloc[:, 2] > 0) & (~df.op_type.isin(["getitem", "Total"]))]
    return {"subgraphs": info.num_delegated_subgraphs, "portable": {r.op_type: int(r.iloc[2]) for _, r in rest.iterrows()}}
