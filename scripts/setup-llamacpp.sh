#!/usr/bin/env bash
# The llama.cpp route (GGUF quantization and serving; see docs/llamacpp.md): llama-cpp-python compiled
# from its sdist (PyPI has no Linux wheel; the prebuilt alternatives cannot quantize or do not load on
# this glibc). About 4-8 minutes on a 2-core machine, once; skipped when already importable.
# The sdist is downloaded once into safetydrift's tools dir and kept: the build uses it, and so does the
# HF→GGUF converter it vendors (so a run from an empty artifact cache does not fetch it again).
set -euo pipefail
PY="${PYTHON:-python3}"
VERSION=0.3.36
export PIP_ROOT_USER_ACTION=ignore
TOOLS="$("$PY" -c 'from safetydrift.paths import tools_dir; print(tools_dir() / "llamacpp")')"
sdist() { ls "$TOOLS"/llama_cpp_python-"$VERSION".tar.gz "$TOOLS"/llama-cpp-python-"$VERSION".tar.gz 2>/dev/null | head -n 1; }
if [ -z "$(sdist)" ]; then
  mkdir -p "$TOOLS"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" -d "$TOOLS"
fi
if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python from source (once, several minutes)…" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts "$(sdist)"
fi
# convert_hf_to_gguf.py needs sentencepiece; llama-cpp-python needs diskcache.
"$PY" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts sentencepiece diskcache
