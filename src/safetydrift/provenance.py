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
    it is not a git checkout of safetydrift itself (an installed wheel, even one inside another project's repo:
    its version is in :func:`library_versions`). Cached: the first call names the code for the process, so a
    run calls it when it starts (a commit made during a long run must not be named as the code that ran).

    Why: a measurement names the code that made it, so a reader can check out that commit."""
    import os

    src = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(src), *args], capture_output=True, text=True,
                              timeout=10, check=True, env=env).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", Path(__file__).name)  # this file is tracked by the repo that holds it
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None
