"""GGUF → Q2_K … Q8_0 through the C API ``llama_model_quantize`` (the same mixes as ``llama-quantize``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetydrift.errors import ModelLoadError
from safetydrift.llamacpp.runtime import QuantizationError, default_threads, import_llama_cpp

#: The quantization types :func:`quantize_gguf` accepts, mapped to llama.cpp's ``enum llama_ftype``.
QUANT_TYPES: dict[str, int] = {
    "Q2_K": 10,
    "Q3_K_M": 12,
    "Q4_K_M": 15,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "Q8_0": 7,
}

_log = logging.getLogger(__name__)


def quantize_gguf(src: Path, dst: Path, qtype: str, *, n_threads: int | None = None) -> Path:
    """Quantize a f32/f16/bf16 GGUF file to ``qtype`` (one of :data:`QUANT_TYPES`, any case) with llama.cpp's mixes.

    K-quants need rows a multiple of 256 wide; llama.cpp quantizes other tensors to a fallback type
    (Q4_K -> Q5_0, Q6_K -> Q8_0, ...). How many did is logged once at WARNING; llama.cpp's own per-tensor log
    is captured, and its failure line becomes the :class:`QuantizationError` message.
    """
    qtype = qtype.upper() if isinstance(qtype, str) else qtype
    if qtype not in QUANT_TYPES:
        raise ValueError(
            f"unsupported GGUF quantization type {qtype!r}; choose one of {', '.join(QUANT_TYPES)}"
        )
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelLoadError(f"GGUF file not found: {src}")
    llama_cpp = import_llama_cpp()
    import ctypes

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = n_threads or default_threads()
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    with _captured_llama_log(llama_cpp) as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        why = next(
            (ln.split("failed to quantize:", 1)[1].strip() for ln in log if "failed to quantize:" in ln), ""
        )
        raise QuantizationError(f"llama.cpp could not quantize {src} to {qtype}: {why or f'code {rc}'}")
    os.replace(partial, dst)
    fallbacks = sum("falling back to" in ln for ln in log)
    if fallbacks:
        _log.warning(
            "%s: %d tensor(s) are not a multiple of 256 wide and use llama.cpp's fallback types",
            dst.name,
            fallbacks,
        )
    return dst


@contextlib.contextmanager
def _captured_llama_log(llama_cpp: Any) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines instead of printing them; restore llama-cpp-python's handler after."""
    import ctypes

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        previous = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)
        llama_cpp.llama_log_set(previous, ctypes.c_void_p(0))

