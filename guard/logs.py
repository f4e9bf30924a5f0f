"""Third-party noise: hidden from normal output, shown with GUARD_DEBUG=1.

torchao probes optional CUDA .so files at import and logs each failure; torch's pytree logs a deprecation for
torchao's enums; torch.export emits FutureWarnings; ExecuTorch warns about the KV cache's buffer mutation at every
export (intended: the cache starts zeroed, docs/export.md). None of it is actionable for a guard user.
"""

from __future__ import annotations

import logging
import os
import warnings

LOGGERS = ("torchao", "torch.utils._pytree", "transformers", "torch._export", "torch.export", "executorch")


def debug() -> bool:
    return os.environ.get("GUARD_DEBUG", "") not in ("", "0")


def quiet_third_party() -> None:
    """Hide the known third-party warnings and log lines (idempotent). GUARD_DEBUG=1: show everything."""
    if debug():
        return
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|torchao|executorch|transformers)(\.|$)")
    warnings.filterwarnings("ignore", message=r"Mutation on a buffer in the model is detected", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch|torchao|executorch)(\.|$)")
    # torch's pytree deprecation, raised from copyreg while torch.export deep-copies torchao's quantized tensors
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
