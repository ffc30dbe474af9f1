"""``gguf:<path>``: a GGUF file, dequantized once into a cached transformers checkpoint.

With ``native=true`` the file is served as is by the llama.cpp backend instead (no dequantization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetydrift.context import Context
from safetydrift.errors import ModelLoadError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import sources
from safetydrift.sources.convert import gguf_to_hf
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel


@dataclass(frozen=True, kw_only=True)
class GGUFParams(Params):
    path: str = field(metadata=p("a GGUF file path (gguf:./model.Q4_K_M.gguf)", positional=True))
    native: bool = field(default=False, metadata=p("serve the file as is with llama.cpp (no dequantization)"))


@sources.register("gguf", help="gguf:<path>[,native=true] — a GGUF file (dequantized, or served by llama.cpp)")
@with_params(GGUFParams)
def gguf(spec: ComponentSpec, ctx: Context) -> ResolvedModel:
    params = from_spec(GGUFParams, spec)
    path = Path(params.path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelLoadError(f"{path} is not a GGUF file (bad magic)")
    digest = ctx.hash_file(path)
    if params.native:
        return ResolvedModel(spec=str(spec), kind="gguf", path=path.resolve(), weights_sha256=digest)
    out = ctx.cache_dir / "sources" / f"gguf-{digest[:20]}" / "hf"
    gguf_to_hf(path, out, ctx)
    return ResolvedModel(
        spec=str(spec),
        kind="hf",
        path=out,
        weights_sha256=ctx.hash_weights(out),
        provenance={"source": "gguf", "gguf": str(path), "gguf_sha256": digest},
    )
