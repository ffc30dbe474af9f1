"""A BitDelta variant on disk, and how to rebuild the evaluated checkpoint from it.

Inside the variant directory:

``delta.safetensors``  for every compressed matrix ``<name>.<field>`` tensors (signs: uint8 packed, one
    row per mask, + ``alpha`` fp32; or codes/lo/scale; or u/s/vh; the controls: ``delta`` fp32 for
    ``scale``, signs + alpha for ``random_sign``; see :mod:`.codecs`) and metadata:
    format, mode, settings, shapes, ``rest``, the built checkpoint's tensor names and dtypes, and the
    reference's and fine-tuned model's weights sha256. ``delta_bytes`` is this file's size.
``rest.safetensors``  the uncompressed tensors of the built checkpoint that differ from the reference
    (with ``rest=ft``: the fine-tune's embeddings, norms, LM head, biases), each in the fine-tuned
    checkpoint's dtype when that round-trips exactly. Absent when nothing differs (``rest=ref``).
    ``rest_bytes`` is its size: the honest storage cost of a variant is delta_bytes + rest_bytes.

``apply_delta(ref, load_delta(path))`` rebuilds the built checkpoint's state dict exactly (every tensor,
in its dtype): compressed matrices as Ŵ = W_ref + Δ̂, the rest from ``rest.safetensors``, all else from
the reference, whose weights hash is checked first (a delta on the wrong base gives a plausible but wrong
model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.variants.bitdelta.codecs import Settings, codec

if TYPE_CHECKING:
    import torch

DELTA_FILE = "delta.safetensors"
REST_FILE = "rest.safetensors"
FORMAT = "safetydrift.delta/2"  # /2: fp32 k-bit scales, ``rest`` tensors and the checkpoint's tensor list


# -------------------------------------------------------------------------------- the delta object

@dataclass(eq=False)
class CompressedDelta:
    """A compressed delta: per matrix, the stored fields of its codec.

    mode: ``sign`` (settings ``masks``), ``kbit`` (``bits``, ``group``) or ``lowrank`` (``rank``); the
        controls ``scale`` (``scale``) and ``random_sign`` (``seed``).
    meta: free strings saved in the file's metadata (reference/fine-tuned weights sha256, specs, rest).
    rest: uncompressed tensors of the built checkpoint that differ from the reference (``rest.safetensors``).
    tensors: every tensor of the built checkpoint → its dtype name, so :func:`apply_delta` rebuilds exactly
        that state dict; empty when unknown (a bare :func:`compress`): then the reference's tensors.
    """

    mode: str
    settings: Settings
    shapes: dict[str, tuple[int, ...]]
    fields: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, str] = field(default_factory=dict)
    rest: dict[str, torch.Tensor] = field(default_factory=dict)
    tensors: dict[str, str] = field(default_factory=dict)

    def decode(self, name: str) -> torch.Tensor:
        """Δ̂ of one matrix, fp32."""
        return codec(self.mode).decode(self.fields[name], self.shapes[name], self.settings)

    @property
    def names(self) -> list[str]:
        return list(self.shapes)

    @property
    def n_elements(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    @property
    def payload_bytes(self) -> int:
        """Bytes of the stored compressed tensors (the file adds a small header; ``rest`` not included)."""
        return sum(t.numel() * t.element_size() for f in self.fields.values() for t in f.values())

    def alphas(self) -> list[float]:
        return [float(a) for f in self.fields.values() for a in f.get("alpha", [])]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompressedDelta):
            return NotImplemented
        if (self.mode, self.settings, self.meta, self.tensors) != (other.mode, other.settings, other.meta,
                                                                   other.tensors):
            return False
        if {k: tuple(v) for k, v in self.shapes.items()} != {k: tuple(v) for k, v in other.shapes.items()}:
            return False
        if set(self.fields) != set(other.fields) or not _same_tensors(self.rest, other.rest):
            return False
        return all(_same_tensors(f, other.fields[name]) for name, f in self.fields.items())


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    import torch

    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def compress(
    ref: dict[str, torch.Tensor],
    ft: dict[str, torch.Tensor],
    names: Sequence[str],
    *,
    masks: int = 1,
    bits: int | None = None,
    group: int = 128,
    rank: int | None = None,
    scale: float | None = None,
    matched: bool = False,
    signs: str = "delta",
    seed: int = 0,
    meta: dict[str, str] | None = None,
) -> CompressedDelta:
    """Δ = W_ft − W_ref for each named matrix, compressed by one codec (1-bit/masks, k-bit, or rank-r), or
    one of the controls: ``scale=λ`` (Δ̂ = λ·Δ) or ``signs="random"`` (Δ̂ = mean|Δ|·S, S seeded ±1).

    Only the selected matrices: the ``rest`` and ``tensors`` of a built variant are filled in by the build.
    """
    settings: Settings
    if signs not in ("delta", "random"):
        raise ValueError(f"signs must be 'delta' or 'random', not {signs!r}")
    chosen = [k for k, v in (("bits", bits), ("rank", rank), ("scale", scale), ("matched", matched or None),
                             ("signs", signs == "random" or None)) if v is not None]
    if len(chosen) > 1:
        raise ValueError(f"compress: choose one of bits, rank, scale, matched, signs='random' "
                         f"(got {', '.join(chosen)})")
    if bits is not None:
        mode, settings = "kbit", {"bits": bits, "group": group}
    elif rank is not None:
        mode, settings = "lowrank", {"rank": rank}
    elif scale is not None:
        mode, settings = "scale", {"scale": float(scale)}
    elif matched:
        mode, settings = "scale_matched", {}
    elif signs == "random":
        mode, settings = "random_sign", {"seed": seed}
    else:
        mode, settings = "sign", {"masks": masks}
    encode = codec(mode).encode
    shapes, fields = {}, {}
    for name in names:
        delta = ft[name].detach().float() - ref[name].detach().float()
        shapes[name] = tuple(delta.shape)
        fields[name] = encode(delta, settings, name)
    return CompressedDelta(mode, settings, shapes, fields, dict(meta or {}))


def apply_delta(ref: dict[str, torch.Tensor] | Path | str, delta: CompressedDelta) -> dict[str, torch.Tensor]:
    """Rebuild the variant's state dict: Ŵ = W_ref + Δ̂ (fp32) for the compressed matrices, ``delta.rest``
    for the uncompressed tensors that differ from the reference, the reference for the others.

    ``ref`` is a state dict or a checkpoint directory; a directory's weights must hash to the delta's
    ``reference_sha256`` (a delta applied to the wrong base gives a plausible but wrong model). When the
    delta knows its checkpoint's tensors (every built variant), exactly those are returned, in their dtypes.
    """
    import torch

    if not isinstance(ref, dict):
        ref = load_reference(ref, delta.meta.get("reference_sha256"))
    names = list(delta.tensors) or list(dict.fromkeys([*ref, *delta.rest, *delta.names]))
    out = {}
    for name in names:
        if name in delta.shapes:
            if name not in ref:
                raise KeyError(f"the reference has no tensor {name!r}")
            w = ref[name].detach()
            t = w.float() + delta.decode(name).to(w.device)
        elif name in delta.rest:
            t = delta.rest[name]
        elif name in ref:
            t = ref[name]
        else:
            raise KeyError(f"the reference has no tensor {name!r} and the delta does not store it")
        dtype = delta.tensors.get(name)
        out[name] = t.to(getattr(torch, dtype)) if dtype else t
    return out


def load_reference(path: Path | str, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint directory's safetensors weights as one state dict, after checking their hash."""
    from safetensors.torch import load_file

    from safetydrift.hashing import sha256_dir_weights

    path = Path(path)
    if expected_sha256 is not None:
        got = sha256_dir_weights(path)
        if got != expected_sha256:
            raise ValueError(
                f"{path} is not this delta's reference: its weights hash to {got[:16]}…, the delta was made "
                f"against {expected_sha256[:16]}…"
            )
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path} (apply_delta reads safetensors only)")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def rest_path(delta_path: Path | str) -> Path:
    """Where the ``rest`` tensors of a delta file live: ``rest.safetensors`` beside ``delta.safetensors``,
    ``<stem>.rest.safetensors`` beside any other name (two deltas in one directory do not collide)."""
    p = Path(delta_path)
    return p.with_name(REST_FILE) if p.name == DELTA_FILE else p.with_name(f"{p.stem}.rest.safetensors")


def save_delta(path: Path | str, delta: CompressedDelta) -> int:
    """Write ``delta`` as safetensors (``<name>.<field>`` tensors + JSON metadata), and its ``rest`` tensors
    (if any) to :func:`rest_path`; returns the delta file's size (``delta_bytes``, rest not included)."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": t.detach().cpu().contiguous() for name, f in delta.fields.items() for k, t in f.items()}
    metadata = {
        **delta.meta,
        "format": FORMAT,
        "mode": delta.mode,
        "settings": json.dumps(delta.settings, sort_keys=True),
        "shapes": json.dumps({k: list(v) for k, v in delta.shapes.items()}),
        "rest_tensors": json.dumps(sorted(delta.rest)),
        "tensors": json.dumps(delta.tensors),
    }
    save_file(tensors, str(path), metadata=metadata)
    rp = rest_path(path)
    if delta.rest:
        save_file({k: t.detach().cpu().contiguous() for k, t in delta.rest.items()}, str(rp),
                  metadata={"format": FORMAT, "delta_file": Path(path).name})
    elif rp.exists():
        rp.unlink()  # a stale rest file would be taken for this delta's
    return Path(path).stat().st_size


def load_delta(path: Path | str) -> CompressedDelta:
    """Inverse of :func:`save_delta`, ``rest`` tensors included."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} delta file (format {metadata.get('format')!r}); rebuild it")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    shapes = {k: tuple(v) for k, v in json.loads(metadata.pop("shapes")).items()}
    mode = metadata.pop("mode")
    settings = json.loads(metadata.pop("settings"))
    rest_names = json.loads(metadata.pop("rest_tensors"))
    checkpoint = json.loads(metadata.pop("tensors"))
    metadata.pop("format")
    fields: dict[str, dict[str, Any]] = {name: {} for name in shapes}
    for key, t in tensors.items():
        name, _, fld = key.rpartition(".")
        fields[name][fld] = t
    rest: dict[str, torch.Tensor] = {}
    if rest_names:
        rp = rest_path(path)
        if not rp.is_file():
            raise FileNotFoundError(f"{path}: its {len(rest_names)} uncompressed tensors should be in {rp}")
        rest = load_file(str(rp))
        if sorted(rest) != rest_names:
            raise ValueError(f"{rp} does not hold the tensors {path} lists (another delta's rest file?)")
    return CompressedDelta(mode, settings, shapes, fields, metadata, rest, checkpoint)


def delta_file_info(path: Path | str) -> dict[str, Any]:
    """Sizes of a stored delta (and its rest file) without loading tensors (for ``inspect``)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    shapes = json.loads(metadata.get("shapes", "{}"))
    n = sum(math.prod(s) for s in shapes.values())
    size = Path(path).stat().st_size
    rp = rest_path(path)
    n_rest = len(json.loads(metadata.get("rest_tensors", "[]")))
    return {
        "mode": metadata.get("mode"),
        "settings": json.loads(metadata.get("settings", "{}")),
        "n_matrices": len(shapes),
        "n_elements": n,
        "delta_bytes": size,
        "delta_fp16_bytes": 2 * n,
        "bits_per_weight": 8 * size / n if n else None,
        "rest": metadata.get("rest"),
        "rest_tensors": n_rest,
        "rest_bytes": rp.stat().st_size if n_rest and rp.is_file() else 0,
        "reference_sha256": metadata.get("reference_sha256"),
    }

