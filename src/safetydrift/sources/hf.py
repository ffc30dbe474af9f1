"""``hf:<dir or hub id>``: a local transformers checkpoint, or a hub id already in the local HF cache.

Hub ids are looked up offline only: this tool never downloads weights at run time, and an id that is
not cached gives a one-line error saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetydrift.context import Context
from safetydrift.errors import ModelLoadError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import sources
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel


def _from_hub_cache(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as e:
        raise ModelLoadError(
            f"hub model {repo_id!r} is not in the local HF cache and this machine is offline "
            f"(download it elsewhere, or pass a local directory): {type(e).__name__}"
        ) from None


@dataclass(frozen=True, kw_only=True)
class HFParams(Params):
    target: str = field(metadata=p("a checkpoint directory or a hub id (hf:./my-model)", positional=True))
    revision: str | None = field(default=None, metadata=p("hub revision (hub ids only)"))


@sources.register("hf", help="hf:<dir or hub id>[,revision=R] — a transformers checkpoint")
@with_params(HFParams)
def hf(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    params = from_spec(HFParams, spec)
    target = params.target
    p = Path(target).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise ModelLoadError(f"{p} is not a transformers checkpoint directory (no config.json)")
        path = p.resolve()
    elif "/" in target and not target.startswith((".", "/", "~")) and target.count("/") == 1:
        path = _from_hub_cache(target, params.revision)
    else:
        raise ModelLoadError(f"model directory not found: {target}")
    if not any(path.glob("*.safetensors")) and any(path.glob(f"*{s}") for s in (".bin", ".pt", ".pth")):
        # refused before any output exists: loading a pickle can run arbitrary code
        raise ModelLoadError(f"{path} holds only pickle weights (.bin/.pt): convert them to safetensors first")
    try:
        whash = ctx.hash_weights(path)
    except FileNotFoundError as e:
        raise ModelLoadError(str(e)) from None
    return ResolvedModel(spec=str(spec), kind="hf", path=path, weights_sha256=whash, provenance={"source": "hf"})
