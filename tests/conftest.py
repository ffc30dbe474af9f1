"""Shared fixtures: an isolated artifact cache per session, tiny random models, the CLI runner."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli.main: spinning OpenMP threads thrash a 2-core box


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdcache")


@pytest.fixture
def ctx(cache_dir: Path):
    from safetydrift.context import Context

    return Context(cache_dir=cache_dir, quiet=True)


@pytest.fixture(scope="session")
def shipped_cache() -> Path:
    """Integration tests share the user's cache so the shipped model is converted once per machine."""
    from safetydrift.context import default_cache_dir

    return default_cache_dir()


def run_cli(*args: str, cache: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    if cache is not None:
        e["SAFETYDRIFT_CACHE"] = str(cache)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "safetydrift", *args], capture_output=True, text=True, timeout=timeout, env=e
    )


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and predictably on a busy machine) on one thread."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def perturbed_copy(src: Path, dst: Path, scale: float = 0.01, seed: int = 1) -> Path:
    """A stand-in "fine-tune": every tensor of ``src`` plus Gaussian noise, tokenizer files copied."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".sha256.json"):
            shutil.copy2(f, dst / f.name)
    g = torch.Generator().manual_seed(seed)
    sd = load_file(str(src / "model.safetensors"))
    save_file({k: (v + scale * torch.randn(v.shape, generator=g)).contiguous() for k, v in sd.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def fake_embed(texts) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts that share words have a positive cosine (stands in for MiniLM)."""
    out = np.zeros((len(texts), 64))
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z]+", t.lower()):
            out[i, int(hashlib.sha256(w.encode()).hexdigest(), 16) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (the scripts are not a package: they run as ``python scripts/x.py``)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
