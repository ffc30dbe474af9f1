"""Library versions and machine facts recorded with every result."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

_LIBS = ("safetydrift", "torch", "transformers", "peft", "safetensors", "gguf", "numpy", "scipy", "httpx")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for lib in _LIBS:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = None
    return out


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any] | None:
    """The git commit of the safetydrift source that is running, and whether it had local changes; None when
    it is not a git checkout (an installed wheel: its version is in :func:`library_versions`).

    Why: a measurement names the code that made it, so a reader can check out that commit."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None
