"""The llama.cpp route (through ``llama-cpp-python``): HF → GGUF, quantization, and a model that chats and
scores. The route and the numbers behind it are in ``docs/llamacpp.md``.

- :mod:`.convert`   :func:`convert_hf_to_gguf` with llama.cpp's own converter (from the sdist, once).
- :mod:`.quantize`  :func:`quantize_gguf` through ``llama_model_quantize`` (Q2_K … Q8_0).
- :mod:`.model`     :class:`LlamaCppModel`: chat, batched chat, next-token logits for perplexity/KL.
- :mod:`.runtime`   loading the native library, thread count, and the route's errors.

The ``llamacpp`` backend (``safetydrift.backends.llamacpp``) serves GGUF variants with :class:`LlamaCppModel`;
the ``quantize:method=gguf`` transform calls :func:`convert_hf_to_gguf` then :func:`quantize_gguf`. Importing
this package never loads llama.cpp itself: the functions do, when called.
"""

from __future__ import annotations

from safetydrift.llamacpp.convert import (
    CONVERT_OUTTYPES,
    LLAMA_CPP_PYTHON_VERSION,
    convert_hf_to_gguf,
    ensure_converter,
)
from safetydrift.llamacpp.model import FALLBACK_TEMPLATE, LlamaCppModel
from safetydrift.llamacpp.quantize import QUANT_TYPES, quantize_gguf
from safetydrift.llamacpp.runtime import (
    ConversionError,
    ConverterUnavailableError,
    LlamaCppUnavailableError,
    QuantizationError,
    default_threads,
    import_llama_cpp,
    llama_cpp_python_version,
)

__all__ = [
    "CONVERT_OUTTYPES",
    "FALLBACK_TEMPLATE",
    "LLAMA_CPP_PYTHON_VERSION",
    "QUANT_TYPES",
    "ConversionError",
    "ConverterUnavailableError",
    "LlamaCppModel",
    "LlamaCppUnavailableError",
    "QuantizationError",
    "convert_hf_to_gguf",
    "default_threads",
    "ensure_converter",
    "import_llama_cpp",
    "llama_cpp_python_version",
    "quantize_gguf",
]
