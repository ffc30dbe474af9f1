"""Loading llama.cpp (through ``llama-cpp-python``) and sizing its thread pool; the route's errors.

Nothing heavy is imported at module import time: :func:`import_llama_cpp` loads the native library when a
function needs it, and turns a missing or broken install into one :class:`LlamaCppUnavailableError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from safetydrift.errors import ModelLoadError, UnsupportedError

_INSTALL_HINT = "pip install llama-cpp-python==0.3.36 sentencepiece (see docs/llamacpp.md)"


class LlamaCppUnavailableError(UnsupportedError, RuntimeError):
    """llama-cpp-python (or its native library) cannot be imported on this machine."""


class ConverterUnavailableError(UnsupportedError, RuntimeError):
    """llama.cpp's convert_hf_to_gguf.py cannot be fetched or cannot run here."""


class ConversionError(ModelLoadError, RuntimeError):
    """convert_hf_to_gguf.py ran and failed on this checkpoint."""


class QuantizationError(ModelLoadError, RuntimeError):
    """llama_model_quantize failed."""


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a LlamaCppUnavailableError that says why and how to install it."""
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as e:  # OSError/RuntimeError: the .so failed to load
        raise LlamaCppUnavailableError(
            f"llama.cpp is not usable here ({type(e).__name__}: {e}); {_INSTALL_HINT}"
        ) from e
    return llama_cpp


def default_threads() -> int:
    """The cores no other process is using right now (at least 1), sampled over a quarter second.

    llama.cpp's threads spin at barriers: on a machine where something else runs, using every core is 3-4x
    *slower* than using the free ones (docs/llamacpp.md), while on an idle 2-core machine 2 threads are
    1.7x faster than 1. Where the load cannot be read (no /proc), half the logical CPUs, as
    llama-cpp-python does.
    """
    n = os.cpu_count() or 2
    busy = _others_busy_cores()
    if busy is None:
        return max(1, n // 2)
    return max(1, min(n, int(n - busy + 0.3)))


def _others_busy_cores(interval: float = 0.25) -> float | None:
    """Cores kept busy by *other* processes over ``interval`` seconds: machine-wide busy time from
    /proc/stat minus this process's own CPU time.

    Time of niced processes (/proc/stat's ``nice`` column) is not counted when this process runs at normal
    priority: the scheduler gives our threads the core whenever they want it, so low-priority work (a
    ``nice -n 19`` job) does not make llama.cpp's spinning threads wait, and counting it would halve the
    threads for nothing."""
    import time

    skip_nice = os.nice(0) <= 0

    def sample() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            vals = [float(x) for x in f.readline().split()[1:]]
        return busy_ticks(vals, skip_nice), time.monotonic(), time.process_time()

    try:
        tick = float(os.sysconf("SC_CLK_TCK"))
        b0, w0, p0 = sample()
        time.sleep(interval)
        b1, w1, p1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    wall = w1 - w0
    if wall <= 0:
        return None
    return max(0.0, ((b1 - b0) / tick - (p1 - p0)) / wall)


def busy_ticks(vals: list[float], skip_nice: bool) -> float:
    """Busy ticks of /proc/stat's ``cpu`` line (user nice system idle iowait …): all but idle and iowait,
    and without ``nice`` when ``skip_nice``."""
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle - (vals[1] if skip_nice else 0.0)


def llama_cpp_python_version() -> str | None:
    """The installed llama-cpp-python version, or None (read from metadata; the library is not loaded)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def cpu_has_amx() -> bool:
    """Whether this CPU advertises AMX tiles (Intel Sapphire Rapids and later)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        return False
    return False


@contextlib.contextmanager
def model_params_without_extra_buffers(llama_cpp: Any, disable: bool) -> Iterator[None]:
    """While a ``Llama`` is constructed, load its weights without llama.cpp's CPU "extra buffer types".

    Why: on AMX machines a native build routes Q4/Q8 weights into AMX tile buffers, and in sandboxes that
    do not grant AMX state the first matrix product segfaults (measured 2026-12-02: exit 139 for Q4_1,
    Q8_0 and Q4_K_M; f16 unaffected). ``use_extra_bufts=False`` keeps the plain CPU kernels. The
    high-level ``Llama`` has no argument for it, so its default-params call is wrapped for the duration
    of the construction only.
    """
    if not disable:
        yield
        return
    module = llama_cpp.llama.llama_cpp
    original = module.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    module.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_model_default_params = original
