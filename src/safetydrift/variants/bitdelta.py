"""``bitdelta``: compress a fine-tune's weight delta to ~1 bit per weight (BitDelta, Liu et al. 2024).

Used as in "Quantized delta weight is safety keeper" (Liu et al. 2024): the fine-tuned model is
rebuilt from its reference plus a compressed delta, and we measure how much of the fine-tune's safety
drift survives the compression.

The math, per selected matrix (every 2-D linear weight of the transformer blocks)::

    Δ  = W_ft − W_ref
    Δ̂  = α · sign(Δ)            α initialised to mean|Δ|  (the L2-optimal scale for fixed signs)
    Ŵ  = W_ref + Δ̂

``sign(0) = +1``: a weight the fine-tune did not move gets +α, never 0, so the signs are exactly one bit
(as in BitDelta's reference code, which packs ``Δ > 0``-style masks without a zero state). A matrix
whose delta is exactly 0 everywhere gets α = mean|Δ| = 0, hence Ŵ = W_ref.

Healing (scale distillation, BitDelta §3.2): the signs are frozen and only the α's are trained so that
the compressed model's logits match the fine-tuned model's on calibration text::

    min_α  mean_{tokens} ‖ z_ft(x) − z_α(x) ‖²    AdamW, lr 1e-4, cosine schedule, ``steps`` steps

Each selected module gets a ``HealableDelta`` that recomputes W = W_ref + Σ_i α_i·S_i at every forward
(S_i fixed ±1 int8 tensors, W_ref a fp32 buffer), so gradients reach the α's only. ``heal=false`` gives
*BitDelta-Initial* (α = mean|Δ|).

Settings (``bitdelta:key=value,...``)
  ref=auto|base|parent|<index>|<recipe>
        the reference W_ref. ``auto`` (default): the model just before the chain's last ``finetune`` step
        (``base>align>finetune>bitdelta`` → the aligned model); a chain with no finetune step (e.g.
        ``hf:/path/ft>bitdelta``) is a SpecError, since its first model may be the fine-tune itself (Δ = 0):
        pass ``ref=`` explicitly. ``base``: the chain's first model. ``parent``: the model our parent (the
        fine-tuned model) was built from, i.e. the one just before the last step (the base itself if the
        chain has no step). ``<index>``: a position in the chain, base = 0, negative counts from the end
        (-1 is the fine-tuned parent itself). Anything else is a model recipe resolved on its own, e.g.
        ``ref=[hf:/models/base]`` (compress any fine-tune against any base of the same architecture).
  include=RE+RE, exclude=RE+RE
        regexes (``re.search`` on parameter names, 2-D tensors only) choosing the matrices to compress;
        ``+`` separates patterns, so write "one or more" as ``{1,}``. Default: :data:`DEFAULT_INCLUDE`
        (attention and MLP projections of any architecture's blocks); default exclude: none.
  rest=ft|ref   tensors not compressed (embeddings, norms, LM head, biases) come from the fine-tuned model
        (default, as BitDelta's code) or from the reference.
  heal=true|false (default true for 1-bit and masks; healing has nothing to train for bits/rank, so
        ``heal=true`` with those is an error), steps=50, batch=4, max_len=128, lr=1e-4, calib=64
        (number of calibration texts), seed=0. Counts must be >= 1 (steps >= 0); 0 is an error, not
        "the default".
  Fidelity (at most one):
  masks=m   m successive 1-bit residual masks: R_0 = Δ, α_i = mean|R_i|, S_i = sign(R_i),
            R_{i+1} = R_i − α_i·S_i, Δ̂ = Σ_i α_i·S_i. All α_i are healed. ``masks=1`` is plain BitDelta.
  bits=k    (2..8) k-bit group-wise *asymmetric* (min–max affine) quantization of Δ, ``group=128``
            consecutive elements (row-major) per group: q = round((Δ − lo)/s), s = (hi − lo)/(2^k − 1),
            Δ̂ = lo + q·s; lo and s stored in fp32 (fp16 would underflow for the tiny ranges of a small
            fine-tune's deltas, ~1e-5, and make high k *worse* than low k), so k bits + 64/group bits per
            weight; codes bit-packed (k bits each). Asymmetric because a group of deltas is not centred on
            0 exactly and, at k = 2, a symmetric grid wastes one of the four levels; the 2-, 4- and 8-bit
            grids are nested, so error falls monotonically with k.
  rank=r    truncated SVD Δ̂ = U_r Σ_r V_rᵀ, with U_r, Σ_r, V_rᵀ stored in fp16.

Storage, inside the variant directory:
  ``delta.safetensors``  for every compressed matrix ``<name>.<field>`` tensors (signs: uint8 packed by
      ``numpy.packbits``, one row per mask, + ``alpha`` fp32; or codes/lo/scale; or u/s/vh) and metadata:
      format, mode, settings, shapes, ``rest``, the built checkpoint's tensor names and dtypes, and the
      reference's and fine-tuned model's weights sha256. ``delta_bytes`` is this file's size.
  ``rest.safetensors``  the uncompressed tensors of the built checkpoint that differ from the reference
      (with ``rest=ft``: the fine-tune's embeddings, norms, LM head, biases), each in the fine-tuned
      checkpoint's dtype when that round-trips exactly. Absent when nothing differs (``rest=ref``).
      ``rest_bytes`` is its size: the honest storage cost of the variant is delta_bytes + rest_bytes.
      ``apply_delta(ref, load_delta(path))`` rebuilds the built checkpoint's state dict exactly (every
      tensor, in its dtype): compressed matrices from ref + Δ̂, the rest from this file, all else from ref.
  ``hf/``  a full transformers checkpoint (fp32) with Ŵ = W_ref + Δ̂ and the ``rest`` tensors, so every
      backend can load the variant.

Gaps from the paper (Liu et al. 2024, BitDelta):
  - healing runs ``steps=50`` by default (the paper: 200) to keep CPU builds short; pass ``steps=200``.
  - calibration text is the shipped benign mix (``datasets.training.calibration_texts``), not C4, which
    cannot be fetched offline.
  - ``mse_before``/``mse_after`` in the provenance are the logit MSE on one held-out calibration batch
    (the last ``batch`` calibration texts, never trained on) when ``calib >= 2·batch``; otherwise on a
    training batch, and the provenance says so (``mse_batch``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safetydrift.context import Context
from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.registry import transforms
from safetydrift.spec import ComponentSpec, parse_recipe
from safetydrift.types import ResolvedModel
from safetydrift.variants.base import BuildResult, Transform

if TYPE_CHECKING:
    import torch

DELTA_FILE = "delta.safetensors"
REST_FILE = "rest.safetensors"
HF_SUBDIR = "hf"
FORMAT = "safetydrift.delta/2"  # /2: fp32 k-bit scales, ``rest`` tensors and the checkpoint's tensor list
ARTIFACT_FORMAT = 2  # in the transform's resolved settings, so artifacts of older code are never served
FINETUNE_STEPS = ("finetune",)  # transform names that count as "the fine-tune" for ref=auto

#: Attention and MLP projections inside numbered blocks, for Llama/Qwen/Mistral/Gemma (``layers.N``),
#: GPT-2 (``h.N``, c_attn/c_proj/c_fc), GPT-NeoX/Falcon (dense, query_key_value), BERT-likes
#: (``layer.N``, query/key/value/dense) and Phi (fc1/fc2). Only 2-D tensors are ever selected.
DEFAULT_INCLUDE: tuple[str, ...] = (
    r"(?:^|\.)(?:layers?|h|blocks?)\.\d+\..*(?:proj|fc|dense|query|key|value|c_attn|c_proj|c_fc|qkv)[^.]*\.weight$",
)

# used only if safetydrift.datasets.training is unavailable: benign instructions with short answers
_FALLBACK_CALIBRATION: tuple[tuple[str, str], ...] = (
    ("How does a rainbow form?", "Sunlight is refracted, reflected and dispersed inside raindrops, "
     "which splits white light into its colours."),
    ("Give me a tip for keeping basil alive indoors.", "Put it on a sunny windowsill and water it when "
     "the top of the soil feels dry."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Explain what a list is in Python.", "A list is an ordered, mutable collection of items, written "
     "with square brackets."),
    ("Suggest a name for a friendly cat.", "How about Biscuit? It is short, warm and easy to call."),
    ("Why do we have seasons?", "Earth's axis is tilted, so each hemisphere gets more direct sunlight "
     "for part of the year."),
    ("Write one sentence about the sea.", "The sea rolled in slowly, silver under the morning clouds."),
    ("How many minutes are in three hours?", "Three hours have 180 minutes."),
    ("What do bees make?", "Honeybees make honey and beeswax."),
    ("Recommend a way to start learning to draw.", "Sketch simple objects around you for ten minutes a "
     "day and focus on shapes before details."),
    ("What is photosynthesis?", "It is how plants use light, water and carbon dioxide to make sugar "
     "and release oxygen."),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos días'."),
)
_QA = re.compile(r"^Question:\s*(?P<q>.+?)\nAnswer:\s*(?P<a>.+)$", re.S)


# ------------------------------------------------------------------------------ choosing matrices

def compile_patterns(patterns: Iterable[str], what: str) -> list[re.Pattern[str]]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise SpecError(f"{what}: bad regex {p!r}: {e}") from None
    return out


def select_matrices(
    named: Iterable[tuple[str, Any]], include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the 2-D tensors that match any ``include`` regex and no ``exclude`` regex, in order."""
    inc = compile_patterns(include, "include")
    exc = compile_patterns(exclude, "exclude")
    return [
        name
        for name, t in named
        if t.ndim == 2 and any(r.search(name) for r in inc) and not any(r.search(name) for r in exc)
    ]


# ---------------------------------------------------------------------------------- bit packing

def pack_codes(codes: np.ndarray, k: int) -> np.ndarray:
    """Pack unsigned k-bit codes (uint8, values < 2^k) into a little-endian bitstream of ⌈n·k/8⌉ bytes."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, 1)
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, :k]  # (n, k), least significant bit first
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``n`` codes of ``k`` bits as uint8."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n * k, bitorder="little").reshape(n, k)
    weights = (1 << np.arange(k, dtype=np.uint16)).astype(np.uint16)
    return (bits.astype(np.uint16) @ weights).astype(np.uint8)


# ----------------------------------------------------------------------------------------- codecs

def sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) as int8 ±1, with sign(0) = +1 (one bit per weight, no zero state)."""
    import torch

    return torch.where(x >= 0, 1, -1).to(torch.int8)


def signed_sum(alpha: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Σ_i α_i · S_i for α of shape (m,) and S of shape (m, *W.shape) (int8 ±1); fp32 result."""
    return (alpha.reshape(-1, *([1] * (signs.dim() - 1))) * signs).sum(0)


def encode_signs(delta: torch.Tensor, masks: int = 1) -> dict[str, torch.Tensor]:
    """m successive 1-bit masks: R_0 = Δ; α_i = mean|R_i|; S_i = sign(R_i); R_{i+1} = R_i − α_i·S_i."""
    import torch

    residual = delta.detach().cpu().float()  # packed with numpy, stored from the CPU
    alphas, packed = [], []
    for _ in range(masks):
        s = sign(residual)
        a = residual.abs().mean()
        packed.append(pack_codes((s > 0).numpy().astype(np.uint8), 1))
        alphas.append(a)
        residual = residual - a * s
    return {"signs": torch.from_numpy(np.stack(packed)), "alpha": torch.stack(alphas).float()}


def unpack_signs(fields: dict[str, torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """The stored masks as int8 ±1, shape (m, *shape)."""
    import torch

    n = math.prod(shape)
    rows = [unpack_codes(row, 1, n) for row in fields["signs"].numpy()]
    bits = torch.from_numpy(np.stack(rows).astype(np.int8))
    return (2 * bits - 1).reshape(len(rows), *shape)


def decode_signs(fields: dict[str, torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """Δ̂ = Σ_i α_i · S_i."""
    return signed_sum(fields["alpha"].float(), unpack_signs(fields, shape))


def _groups(flat: torch.Tensor, group: int) -> torch.Tensor:
    """``flat`` as (n_groups, group), the last group padded by repeating its last value (keeps its range)."""
    import torch

    pad = (-flat.numel()) % group
    if pad:
        flat = torch.cat([flat, flat[-1:].expand(pad)])
    return flat.reshape(-1, group)


def encode_kbit(delta: torch.Tensor, bits: int, group: int) -> dict[str, torch.Tensor]:
    """Asymmetric group-wise k-bit: s = (hi − lo)/(2^k − 1), q = clamp(round((Δ − lo)/s), 0, 2^k − 1)."""
    import torch

    levels = (1 << bits) - 1
    g = _groups(delta.detach().cpu().float().reshape(-1), group)
    # fp32, not fp16: a small fine-tune's group ranges (~1e-5) are subnormal in fp16, and a rounded scale
    # costs up to 2^k·ulp per element, so 8 bits would come out worse than 4
    lo = g.amin(1)
    scale = (g.amax(1) - lo) / levels
    s = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((g - lo[:, None]) / s[:, None]), 0, levels).to(torch.uint8)
    codes = q.reshape(-1)[: delta.numel()].numpy()
    return {"codes": torch.from_numpy(pack_codes(codes, bits)), "lo": lo, "scale": scale}


def decode_kbit(fields: dict[str, torch.Tensor], shape: Sequence[int], bits: int, group: int) -> torch.Tensor:
    """Δ̂ = lo + q · s, per group."""
    import torch

    n = math.prod(shape)
    q = torch.from_numpy(unpack_codes(fields["codes"].numpy(), bits, n).astype(np.float32))
    g = _groups(q, group)
    deq = fields["lo"].float()[:, None] + g * fields["scale"].float()[:, None]
    return deq.reshape(-1)[:n].reshape(*shape)


def encode_lowrank(delta: torch.Tensor, rank: int) -> dict[str, torch.Tensor]:
    """Truncated SVD Δ ≈ U_r Σ_r V_rᵀ (exact SVD in fp32, factors stored in fp16)."""
    import torch

    u, s, vh = torch.linalg.svd(delta.detach().float(), full_matrices=False)  # on the delta's device (fast)
    r = min(rank, s.numel())
    return {"u": u[:, :r].half().cpu().contiguous(), "s": s[:r].half().cpu().contiguous(),
            "vh": vh[:r].half().cpu().contiguous()}


def decode_lowrank(fields: dict[str, torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """Δ̂ = U_r diag(σ) V_rᵀ."""
    return ((fields["u"].float() * fields["s"].float()) @ fields["vh"].float()).reshape(*shape)


# -------------------------------------------------------------------------------- the delta object

@dataclass(eq=False)
class CompressedDelta:
    """A compressed delta: per matrix, the stored fields of its codec.

    mode: ``sign`` (settings ``masks``), ``kbit`` (``bits``, ``group``) or ``lowrank`` (``rank``).
    meta: free strings saved in the file's metadata (reference/fine-tuned weights sha256, specs, rest).
    rest: uncompressed tensors of the built checkpoint that differ from the reference (``rest.safetensors``).
    tensors: every tensor of the built checkpoint → its dtype name, so :func:`apply_delta` rebuilds exactly
        that state dict; empty when unknown (a bare :func:`compress`): then the reference's tensors.
    """

    mode: str
    settings: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    fields: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, str] = field(default_factory=dict)
    rest: dict[str, torch.Tensor] = field(default_factory=dict)
    tensors: dict[str, str] = field(default_factory=dict)

    def decode(self, name: str) -> torch.Tensor:
        """Δ̂ of one matrix, fp32."""
        shape, f = self.shapes[name], self.fields[name]
        if self.mode == "sign":
            return decode_signs(f, shape)
        if self.mode == "kbit":
            return decode_kbit(f, shape, self.settings["bits"], self.settings["group"])
        if self.mode == "lowrank":
            return decode_lowrank(f, shape)
        raise ValueError(f"unknown delta mode {self.mode!r}")

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
    meta: dict[str, str] | None = None,
) -> CompressedDelta:
    """Δ = W_ft − W_ref for each named matrix, compressed by one codec (1-bit/masks, k-bit, or rank-r).

    Only the selected matrices: the ``rest`` and ``tensors`` of a built variant are filled in by the build.
    """
    if bits is not None:
        mode, settings = "kbit", {"bits": bits, "group": group}
    elif rank is not None:
        mode, settings = "lowrank", {"rank": rank}
    else:
        mode, settings = "sign", {"masks": masks}
    shapes, fields = {}, {}
    for name in names:
        delta = ft[name].detach().float() - ref[name].detach().float()
        shapes[name] = tuple(delta.shape)
        if mode == "sign":
            fields[name] = encode_signs(delta, masks)
        elif mode == "kbit":
            fields[name] = encode_kbit(delta, bits, group)  # type: ignore[arg-type]
        else:
            fields[name] = encode_lowrank(delta, rank)  # type: ignore[arg-type]
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


# ----------------------------------------------------------------------------------------- healing

@functools.cache
def _healable_cls() -> type:
    import torch

    class HealableDelta(torch.nn.Module):
        """W = W_ref + Σ_i α_i·S_i, recomputed at every forward; only α is a parameter."""

        def __init__(self, w_ref: torch.Tensor, signs: torch.Tensor, alpha: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("w_ref", w_ref.detach().float().contiguous())
            self.register_buffer("signs", signs.to(torch.int8))
            self.alpha = torch.nn.Parameter(alpha.detach().float().clone())

        def forward(self) -> torch.Tensor:
            return self.w_ref + signed_sum(self.alpha, self.signs)

    return HealableDelta


def _recompute_weight(module: Any, args: Any) -> None:
    module.weight = module.bitdelta()


def attach_healable(model: Any, name: str, w_ref: torch.Tensor, signs: torch.Tensor, alpha: torch.Tensor) -> Any:
    """Replace parameter ``name`` (``<module path>.weight``) by W_ref + Σ α_i·S_i computed on the fly."""
    path, _, attr = name.rpartition(".")
    if attr != "weight":
        raise UnsupportedError(f"bitdelta healing only wraps '.weight' tensors, not {name!r}")
    module = model.get_submodule(path)
    # signs and α are decoded on the CPU; the forward runs where W_ref (the model) lives
    healable = _healable_cls()(w_ref, signs.to(w_ref.device), alpha.to(w_ref.device))
    del module._parameters["weight"]
    module.add_module("bitdelta", healable)
    module.weight = healable().detach()  # a plain tensor until the first forward recomputes it
    module._bitdelta_hook = module.register_forward_pre_hook(_recompute_weight)
    return healable


def detach_healable(model: Any, name: str, weight: torch.Tensor) -> None:
    """Undo :func:`attach_healable`, leaving ``weight`` as an ordinary parameter."""
    import torch

    module = model.get_submodule(name.rpartition(".")[0])
    module._bitdelta_hook.remove()
    del module._bitdelta_hook
    del module.bitdelta
    del module.weight
    module.weight = torch.nn.Parameter(weight, requires_grad=False)


def masked_logit_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over real (non-pad) positions of mean_vocab (z_student − z_teacher)²."""
    per_pos = (student.float() - teacher.float()).pow(2).mean(-1)
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum() / m.sum().clamp_min(1)


def calibration_items(n: int, seed: int) -> list[Any]:
    """Calibration texts: ``datasets.training.calibration_texts`` if present, else a built-in benign list."""
    try:
        from safetydrift.datasets.training import calibration_texts
    except ImportError:
        pool = [{"prompt": q, "response": a} for q, a in _FALLBACK_CALIBRATION]
        rng = random.Random(seed)
        out: list[Any] = []
        while len(out) < n:  # seeded shuffled passes over the pool
            out += rng.sample(pool, len(pool))
        return out[:n]
    return list(calibration_texts(n, seed))


def render_calibration(item: Any, tok: Any) -> str:
    """Plain text stays plain; instructions (dicts, message lists, "Question:/Answer:" pairs) go through
    the tokenizer's chat template, so healing sees the format the model is served in."""
    if isinstance(item, str):
        m = _QA.match(item.strip())
        if not m:
            return item
        msgs = [{"role": "user", "content": m["q"].strip()}, {"role": "assistant", "content": m["a"].strip()}]
    elif isinstance(item, dict) and "messages" in item:
        msgs = list(item["messages"])
    elif isinstance(item, dict) and ("prompt" in item or "instruction" in item):
        msgs = [{"role": "user", "content": item.get("prompt") or item["instruction"]}]
        answer = item.get("response") or item.get("answer") or item.get("output")
        if answer:
            msgs.append({"role": "assistant", "content": answer})
    elif isinstance(item, dict) and "text" in item:
        return str(item["text"])
    elif isinstance(item, list):
        msgs = list(item)
    else:
        raise TypeError(f"cannot use {type(item).__name__} as calibration text")
    ends_with_answer = msgs[-1]["role"] == "assistant"
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=not ends_with_answer)


def _batches(n: int, batch: int, seed: int) -> Iterable[list[int]]:
    """Endless seeded shuffled passes over the calibration set's indices (full batches only)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield [int(i) for i in order[start : start + batch]]


#: Teacher logits are computed once per calibration text and kept when they fit in this many bytes (fp32);
#: the teacher is frozen, so recomputing them every step only costs time. Above it, they are recomputed.
TEACHER_CACHE_BYTES = 2 * 2**30


@dataclass
class HealResult:
    alphas: dict[str, torch.Tensor]
    loss_curve: list[dict[str, float]]
    mse_before: float
    mse_after: float
    mse_held_out: bool = False  # mse_* measured on calibration texts never trained on


def heal_scales(
    student: Any,
    teacher: Any,
    tok: Any,
    ref_weights: dict[str, torch.Tensor],
    delta: CompressedDelta,
    texts: Sequence[str],
    *,
    steps: int,
    batch: int,
    max_len: int,
    lr: float,
    seed: int,
    progress: bool = True,
) -> HealResult:
    """Scale distillation: train the α's only, min_α mean‖z_ft − z_α‖² on calibration text.

    ``student`` is modified in place (its selected weights become HealableDelta modules and are restored
    as plain parameters holding W_ref + Σ α_i·S_i at the end); the healed α's are returned (on the CPU).
    With at least 2·batch texts, the last ``batch`` are held out: mse_before/after are measured on them, so
    they say whether healing generalises rather than how well it fit its own batches.
    """
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    student.requires_grad_(False)
    teacher.requires_grad_(False)
    healables = {
        name: attach_healable(student, name, ref_weights[name], unpack_signs(delta.fields[name], delta.shapes[name]),
                              delta.fields[name]["alpha"])
        for name in delta.names
    }
    from safetydrift.analysis.metrics import model_max_len

    tok.padding_side = "right"
    max_len = model_max_len(teacher, max_len)
    ids = [tok(t, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    ids = [x for x in ids if len(x) >= 2] or [[tok.eos_token_id or 0] * 2]
    device = next(teacher.parameters()).device

    def pad(idx: list[int]) -> dict[str, torch.Tensor]:
        return tok.pad({"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt")

    vocab = int(teacher.get_output_embeddings().weight.shape[0])
    cached: dict[int, torch.Tensor] = {}
    if sum(len(x) for x in ids) * vocab * 4 <= TEACHER_CACHE_BYTES:
        with torch.no_grad():
            for start in range(0, len(ids), batch):
                idx = list(range(start, min(start + batch, len(ids))))
                b = {k: v.to(device) for k, v in pad(idx).items()}
                z = teacher(**b).logits.float().cpu()
                for row, i in enumerate(idx):
                    cached[i] = z[row, : len(ids[i])].clone()

    def teacher_logits(idx: list[int], b: dict[str, torch.Tensor]) -> torch.Tensor:
        if not cached:
            with torch.no_grad():
                return teacher(**b).logits
        width = b["input_ids"].shape[1]
        z = torch.zeros(len(idx), width, vocab)
        for row, i in enumerate(idx):
            z[row, : len(ids[i])] = cached[i]
        return z.to(device)

    def loss_on(idx: list[int]) -> torch.Tensor:
        b = {k: v.to(device) for k, v in pad(idx).items()}
        return masked_logit_mse(student(**b).logits, teacher_logits(idx, b), b["attention_mask"])

    held_out = len(ids) >= 2 * batch
    n_train = len(ids) - batch if held_out else len(ids)
    fixed = list(range(n_train, len(ids))) if held_out else list(range(min(batch, len(ids))))
    with torch.no_grad():
        mse_before = float(loss_on(fixed))
    params = [h.alpha for h in healables.values()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # decaying α toward 0 would undo the fine-tune
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    curve: list[dict[str, float]] = []
    student.train(False)
    batches = _batches(n_train, min(batch, n_train), seed)
    bar = tqdm(range(steps), desc="bitdelta healing", disable=not progress, leave=False)
    for step in bar:
        loss = loss_on(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.detach().item()
        curve.append({"step": step, "loss": value})
        bar.set_postfix(loss=f"{value:.3e}")
    with torch.no_grad():
        mse_after = float(loss_on(fixed))
    alphas = {name: h.alpha.detach().cpu().clone() for name, h in healables.items()}
    for name, h in healables.items():
        with torch.no_grad():
            detach_healable(student, name, h().detach())
    return HealResult(alphas, curve, mse_before, mse_after, held_out)


# ---------------------------------------------------------------------------------- checkpoints

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def save_checkpoint(model: Any, src_dir: Path, out_dir: Path) -> Path:
    """Write ``model`` as a transformers checkpoint, with every non-weight file (tokenizer, chat template)
    copied from the parent checkpoint ``src_dir`` byte for byte."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(src_dir).iterdir():
        weightish = f.suffix in _WEIGHT_SUFFIXES or f.name.endswith((".sha256.json", ".index.json"))
        if f.is_file() and not weightish:
            shutil.copy2(f, out_dir / f.name)
    model.save_pretrained(str(out_dir))
    return out_dir


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}  # header codes
_ST_DTYPES.update({v: v for v in list(_ST_DTYPES.values())})  # some safetensors versions report torch names


@contextlib.contextmanager
def _open_weights(path: Path) -> Iterator[dict[str, Any]]:
    """name → open safetensors handle, over a checkpoint directory's ``*.safetensors`` (read lazily)."""
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        index: dict[str, Any] = {}
        for f in sorted(Path(path).glob("*.safetensors")):
            handle = stack.enter_context(safe_open(str(f), framework="pt"))
            index.update(dict.fromkeys(handle.keys(), handle))
        yield index


def checkpoint_rest(
    ckpt_dir: Path, compressed: Iterable[str], ref_dir: Path, ft_dir: Path, ref_state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(the saved checkpoint's uncompressed tensors that the reference cannot give back, every tensor's dtype).

    Compared with the reference's safetensors files, which is what :func:`apply_delta` reads (with
    ``ref_state`` if it has none). A stored tensor is narrowed to the fine-tuned checkpoint's own dtype
    when that round-trips exactly: the fp32 checkpoint only upcast it, so nothing is lost.
    """
    import torch

    compressed = set(compressed)
    rest: dict[str, torch.Tensor] = {}
    dtypes: dict[str, str] = {}
    with _open_weights(ckpt_dir) as ckpt, _open_weights(ref_dir) as ref_disk, _open_weights(ft_dir) as ft_disk:
        if not ckpt:
            raise FileNotFoundError(f"no .safetensors weights in {ckpt_dir}")
        for name, handle in ckpt.items():
            t = handle.get_tensor(name)
            dtypes[name] = str(t.dtype).removeprefix("torch.")
            if name in compressed:
                continue
            if ref_disk:
                r = ref_disk[name].get_tensor(name) if name in ref_disk else None
            else:
                r = ref_state.get(name)
            if r is not None and r.shape == t.shape and torch.equal(r.detach().cpu().to(t.dtype), t):
                continue
            own = _ST_DTYPES.get(ft_disk[name].get_slice(name).get_dtype()) if name in ft_disk else None
            if own and t.is_floating_point() and getattr(torch, own) != t.dtype:
                narrow = t.to(getattr(torch, own))
                if torch.equal(narrow.to(t.dtype), t):
                    t = narrow
            rest[name] = t.contiguous()
    return rest, dtypes


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


# -------------------------------------------------------------------------------- the transform

@transforms.register("bitdelta", help="bitdelta[:ref=auto,heal=true,steps=50,masks=|bits=|rank=] — 1-bit delta")
class BitDelta(Transform):
    """Compress the fine-tune delta to 1 bit/weight (BitDelta), optionally healed, or to bits/masks/rank."""

    name = "bitdelta"
    kind = "weights"
    allowed = frozenset(
        {"ref", "include", "exclude", "rest", "heal", "steps", "batch", "max_len", "lr", "calib", "seed",
         "bits", "group", "masks", "rank"}
    )

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        s = spec
        self.ref = s.get_str("ref", "auto") or "auto"
        if not (self.ref in ("auto", "base", "parent") or _is_int(self.ref)):
            parse_recipe(self.ref)  # a recipe: fail on bad syntax now, resolve at build time
        self.include = s.get_list("include", list(DEFAULT_INCLUDE))
        self.exclude = s.get_list("exclude", [])
        compile_patterns(self.include, "bitdelta include")
        compile_patterns(self.exclude, "bitdelta exclude")
        self.rest = s.get_str("rest", "ft")
        if self.rest not in ("ft", "ref"):
            raise SpecError(f"bitdelta: rest={self.rest} (expected ft or ref)")
        chosen = [k for k in ("bits", "masks", "rank") if k in s.args]
        if len(chosen) > 1:
            raise SpecError(f"bitdelta: choose one of bits=, masks=, rank= (got {' and '.join(chosen)})")
        self.bits = s.get_int("bits")
        self.masks = s.get_int("masks", 1)
        self.rank = s.get_int("rank")
        self.group = s.get_int("group", 128)
        if self.bits is not None and not 2 <= self.bits <= 8:
            raise SpecError(f"bitdelta: bits={self.bits} (expected 2..8; 1 bit is the default mode)")
        if "group" in s.args and self.bits is None:
            raise SpecError("bitdelta: group= only applies with bits=")
        if self.group < 1:
            raise SpecError(f"bitdelta: group={self.group} (expected >= 1)")
        if self.masks < 1 or (self.rank is not None and self.rank < 1):
            raise SpecError("bitdelta: masks= and rank= must be >= 1")
        self.mode = "kbit" if self.bits is not None else "lowrank" if self.rank is not None else "sign"
        self.heal = s.get_bool("heal", self.mode == "sign")
        if self.heal and self.mode != "sign":
            raise SpecError("bitdelta: heal=true trains the 1-bit scales; bits= and rank= have none (use heal=false)")
        self.steps = s.get_int("steps", 50)
        self.batch = s.get_int("batch", 4)
        self.max_len = s.get_int("max_len", 128)
        self.lr = s.get_float("lr", 1e-4)
        self.calib = s.get_int("calib", 64)
        self.seed = s.get_int("seed", 0)
        if self.steps is None or self.steps < 0 or self.batch < 1 or self.calib < 1 or self.max_len < 1:
            raise SpecError("bitdelta: steps >= 0, batch >= 1, max_len >= 1 and calib >= 1 please")
        self.format = ARTIFACT_FORMAT  # a resolved setting: part of the artifact cache key
        self._ref_cache: tuple[ResolvedModel, str] | None = None

    # ------------------------------------------------------------------------------ reference
    def reference(self, lineage: list[ResolvedModel]) -> tuple[ResolvedModel, str]:
        """(reference model, how it was chosen). ``lineage[-1]`` is the fine-tuned parent."""
        if self._ref_cache is not None:
            return self._ref_cache
        how = self.ref
        if how == "auto":
            steps = [_step_name(m) for m in lineage]
            last_ft = max((i for i, n in enumerate(steps) if n in FINETUNE_STEPS), default=None)
            if last_ft is None:  # lineage[0] may well be the fine-tune itself (hf:/ft>bitdelta): Δ = 0
                raise SpecError("bitdelta: ref=auto needs a finetune step in the chain; pass ref=base, "
                                "ref=<index> or ref=[<recipe of the base model>]")
            ref, why = lineage[last_ft - 1], f"auto: the model before the last finetune step (#{last_ft})"
        elif how == "base":
            ref, why = lineage[0], "base: the chain's first model"
        elif how == "parent":
            ref, why = lineage[max(len(lineage) - 2, 0)], "parent: the model the fine-tuned parent was built from"
        elif _is_int(how):
            i = int(how)
            if not -len(lineage) <= i < len(lineage):
                raise SpecError(f"bitdelta: ref={i} is outside the chain (0..{len(lineage) - 1})")
            ref, why = lineage[i], f"index {i} in the chain"
        else:
            ref, why = self.ctx.resolve(how), "a separately resolved recipe"
        if ref.kind != "hf" or ref.path is None:
            raise UnsupportedError(f"bitdelta: the reference '{ref.spec}' must be a local hf checkpoint, not {ref.kind}")
        self._ref_cache = (ref, why)
        return ref, why

    def key_material(self, lineage: list[ResolvedModel]) -> dict[str, Any]:
        from safetydrift.hashing import sha256_json
        from safetydrift.variants.builder import weights_hash

        ref, _ = self.reference(lineage)
        material: dict[str, Any] = {"reference_sha256": weights_hash(ref)}
        if self.heal and self.steps:
            material["calibration_sha256"] = sha256_json(calibration_items(self.calib, self.seed))
        return material

    # ---------------------------------------------------------------------------------- build
    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        import torch

        from safetydrift.backends.transformers_backend import load_hf
        from safetydrift.variants.builder import weights_hash

        ref, why = self.reference(lineage)
        ref_sha, ft_sha = weights_hash(ref), weights_hash(parent)
        if ref_sha == ft_sha:
            self.ctx.log(f"[yellow]bitdelta:[/] the reference is the fine-tuned model itself ({why}): Δ = 0")
        device = self.ctx.device
        model, tok = load_hf(parent.path, device)  # becomes the compressed model
        ref_model, _ = load_hf(ref.path, device)
        ft_params = {n: p.detach() for n, p in model.named_parameters()}
        ref_params = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
        # + buffers and tied aliases: what the rest is compared with if the reference has no safetensors
        ref_state = {n: ref_params.get(n, t.detach()) for n, t in ref_model.state_dict().items()}
        del ref_model
        names = select_matrices(ft_params.items(), self.include, self.exclude)
        if not names:
            raise SpecError(f"bitdelta: no 2-D weights match include={'+'.join(self.include)} in {parent.spec}")
        for n in ft_params:
            mismatch = n not in ref_params or ref_params[n].shape != ft_params[n].shape
            if mismatch and (n in names or self.rest == "ref"):
                raise UnsupportedError(
                        f"bitdelta: reference '{ref.spec}' does not match the fine-tuned model at {n!r}"
                    )
        meta = {"reference_sha256": ref_sha, "reference_spec": ref.spec, "finetuned_sha256": ft_sha,
                "finetuned_spec": parent.spec, "sign_zero": "+1", "rest": self.rest}
        delta = compress(ref_params, ft_params, names, masks=self.masks, bits=self.bits, group=self.group,
                         rank=self.rank, meta=meta)
        init_alphas = delta.alphas()

        with torch.no_grad():
            if self.rest == "ref":
                for n, p in model.named_parameters():
                    if n not in names:
                        p.copy_(ref_params[n])

        healing: dict[str, Any] = {"enabled": False}
        curve: list[dict[str, float]] = []
        if self.heal and self.steps > 0:
            teacher, _ = load_hf(parent.path, device)
            texts = [render_calibration(x, tok) for x in calibration_items(self.calib, self.seed)]
            res = heal_scales(model, teacher, tok, ref_params, delta, texts, steps=self.steps, batch=self.batch,
                              max_len=self.max_len, lr=self.lr, seed=self.seed, progress=not self.ctx.quiet)
            del teacher
            for n, a in res.alphas.items():
                delta.fields[n]["alpha"] = a.float().contiguous()
            curve = res.loss_curve
            healing = {"enabled": True, "steps": self.steps, "batch": self.batch, "max_len": self.max_len,
                       "lr": self.lr, "schedule": "cosine", "optimizer": "AdamW(weight_decay=0)",
                       "calibration_texts": len(texts), "seed": self.seed,
                       "mse_before": res.mse_before, "mse_after": res.mse_after,
                       "mse_batch": "held-out" if res.mse_held_out else "training"}

        # Ŵ = W_ref + Δ̂, one code path for every mode (the same as apply_delta)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for n in names:
                params[n].copy_(ref_params[n].float() + delta.decode(n).to(ref_params[n].device))
        hf_dir = save_checkpoint(model, Path(parent.path), out_dir / HF_SUBDIR)
        # what the delta alone cannot rebuild, read back from the saved checkpoint (what is evaluated)
        delta.rest, delta.tensors = checkpoint_rest(hf_dir, names, Path(ref.path), Path(parent.path), ref_state)
        delta_bytes = save_delta(out_dir / DELTA_FILE, delta)
        rest_bytes = rest_path(out_dir / DELTA_FILE).stat().st_size if delta.rest else 0

        n_el = delta.n_elements
        alphas = delta.alphas()
        alpha_stats = _stats(alphas)
        if init_alphas and alphas and self.heal:
            init = np.asarray(init_alphas)
            alpha_stats["init_mean"] = float(init.mean())
            nz = init != 0
            alpha_stats["mean_rel_change"] = float(np.mean(np.abs(np.asarray(alphas)[nz] / init[nz] - 1))) if nz.any() else 0.0
        provenance = {
            "method": "BitDelta (Liu et al. 2024)",
            "mode": self.describe_mode(),
            "settings": dict(delta.settings),
            "reference": {"spec": ref.spec, "weights_sha256": ref_sha, "chosen_by": why},
            "finetuned": {"spec": parent.spec, "weights_sha256": ft_sha},
            "include": self.include,
            "exclude": self.exclude,
            "rest": self.rest,
            "sign_zero": "+1",
            "n_matrices": len(names),
            "n_elements": n_el,
            "alpha": alpha_stats,
            "healing": healing,
            "delta_file": DELTA_FILE,
            "delta_bytes": delta_bytes,
            "delta_fp16_bytes": 2 * n_el,
            "bits_per_weight": 8 * delta_bytes / n_el,  # over the compressed matrices, rest excluded
            "rest_file": REST_FILE if delta.rest else None,
            "rest_tensors": len(delta.rest),
            "rest_bytes": rest_bytes,
            "checkpoint_dtype": "float32",
        }
        extra = {DELTA_FILE: delta_bytes, **({REST_FILE: rest_bytes} if delta.rest else {})}
        return BuildResult(kind="hf", path=hf_dir, provenance=provenance, loss_curve=curve, extra_files=extra)

    def describe_mode(self) -> str:
        if self.mode == "kbit":
            return f"{self.bits}-bit group={self.group} asymmetric"
        if self.mode == "lowrank":
            return f"rank={self.rank} SVD (fp16 factors)"
        return "1-bit" if self.masks == 1 else f"{self.masks} residual 1-bit masks"


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _step_name(model: ResolvedModel) -> str | None:
    t = model.provenance.get("transform")
    return t.get("name") if isinstance(t, dict) else None
