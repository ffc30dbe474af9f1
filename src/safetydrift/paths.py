"""Where safetydrift keeps things on disk: a leaf module (it imports nothing from the package), so any
module can ask for a path without pulling in the run context."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    env = os.environ.get("SAFETYDRIFT_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("safetydrift"))


def tools_dir() -> Path:
    """Where the install step puts tools that runs use but never build (llama.cpp's converter sdist).

    Kept apart from the artifact cache: an empty cache means "rebuild every variant", not "download the
    toolchain again". ``SAFETYDRIFT_TOOLS`` overrides it.
    """
    env = os.environ.get("SAFETYDRIFT_TOOLS")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("safetydrift"))
