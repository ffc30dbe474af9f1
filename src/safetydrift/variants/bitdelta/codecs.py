"""The three delta codecs of BitDelta, as in the papers: encode Δ = W_ft − W_ref, decode Δ̂.

``sign`` (BitDelta, Liu et al. 2024; ``masks=m`` residual masks)::

    R_0 = Δ;   α_i = mean|R_i|,  S_i = sign(R_i),  R_{i+1} = R_i − α_i·S_i;   Δ̂ = Σ_i α_i·S_i

    so the rebuilt weight is  Ŵ = W_ref + α·sign(W_ft − W_ref)  for m = 1. α = mean|Δ| is the L2-optimal
    scale for fixed signs. ``sign(0) = +1``: a weight the fine-tune did not move gets +α, never 0, so a
    mask is exactly one bit (as BitDelta's reference code, which packs ``Δ > 0`` masks without a zero
    state); a matrix whose delta is 0 everywhere gets α = 0, hence Ŵ = W_ref.

``kbit`` (``bits=k``, 2..8): group-wise *asymmetric* (min–max affine) quantization of Δ over ``group``
    consecutive elements (row-major)::

        s = (hi − lo)/(2^k − 1),   q = clamp(round((Δ − lo)/s), 0, 2^k − 1),   Δ̂ = lo + q·s

    lo and s are kept in fp32 (fp16 would underflow for a small fine-tune's ranges, ~1e-5, and make high k
    *worse* than low k); codes are bit-packed, k bits each. Asymmetric because a group of deltas is not
    centred on 0 exactly and, at k = 2, a symmetric grid wastes one of four levels; the 2-, 4- and 8-bit
    grids are nested, so the error falls monotonically with k.

``lowrank`` (``rank=r``): truncated SVD  Δ̂ = U_r Σ_r V_rᵀ, factors stored in fp16.

Controls (:data:`CONTROLS`; not compressions: they separate *why* a compressed delta changes behaviour)

``scale`` (``scale=λ``), the pure-shrink control::

        Δ̂ = λ·Δ             (Δ stored in fp32, exact; no signs, no healing)

    every weight keeps its direction and relative size, the whole delta shrinks by λ. A fine-tune whose
    safety drift returns under BitDelta as it does under ``scale≈λ*`` (below) lost it to shrinkage.

``scale_matched`` (``matched=true``), the shrinkage control matched to BitDelta-Initial, per matrix::

        Δ̂ = λ*_m·Δ,   λ*_m = mean|Δ_m|² / mean(Δ_m²)     (Δ in fp32)

    exactly BitDelta-Initial's component along Δ (below), without its orthogonal sign error
    α·sign(Δ) − λ*·Δ. If BitDelta-Initial's drop is shrinkage, this control drops as much; if it drops less,
    the sign error (or what it does to the weights' relative sizes) is doing the work. A fixed ``scale=λ``
    cannot tell: BitDelta's λ* differs per matrix and per fine-tune (0.95 on a 2-step fine-tune of SmolLM2).

``random_sign`` (``signs=random``), the no-direction floor::

        Δ̂ = α·S,   α = mean|Δ|,   S_ij ~ uniform{−1, +1}, seeded per matrix (``seed``, matrix name)

    BitDelta-Initial's magnitude budget (the same α, the same 1 bit per weight), none of its direction:
    E<S, Δ> = 0.

Effective shrink :func:`delta_inner` gives, per matrix, the least-squares multiple of Δ closest to Δ̂::

        λ* = <Δ̂, Δ> / <Δ, Δ>

    ``scale=λ``: λ* = λ.  Random signs: λ* ≈ 0.  BitDelta-Initial (α = mean|Δ|, m = 1):
    λ* = α·Σ|Δ| / ΣΔ² = mean|Δ|² / mean(Δ²) ≤ 1 (Cauchy–Schwarz), 2/π ≈ 0.64 for a Gaussian Δ: a 1-bit
    delta is, along Δ, a shrunk delta (the rest of it, Δ̂ − λ*·Δ, is orthogonal to Δ).

Why a sign is the natural code of a fine-tune: ONE Adam(W) step from a fresh optimizer state (weight decay
0) moves every weight by exactly ±lr, up to ε. With m_1 = (1−β1)·g and v_1 = (1−β2)·g², the bias-corrected
moments are m̂ = g and v̂ = g², so::

        Δ = −lr · m̂ / (√v̂ + ε) = −lr · g / (|g| + ε) ≈ −lr · sign(g)

|Δ| = lr wherever |g| ≫ ε (0 where g = 0), so α = mean|Δ| ≈ lr and α·sign(Δ) reproduces a one-step
fine-tune, entry by entry within |α − lr| + lr·ε/(|g| + ε) (a weight with g = 0 gets +α: sign(0) = +1).
``tests/test_bitdelta_controls.py`` checks it, and that an SGD step (|Δ| ∝ |g|) is *not* rebuilt.
Weight decay adds −lr·λ_wd·W and breaks the constant magnitude. Later steps average gradients over time
and the magnitudes spread, which is what BitDelta's one α per matrix cannot represent.

:data:`CODECS` (and :data:`CONTROLS`) map a mode to its encoder and decoder (with the mode's settings),
so adding a codec is one entry, not another branch in the file format.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

Fields = dict[str, "torch.Tensor"]  # a matrix's stored tensors, e.g. {"signs", "alpha"}
Settings = dict[str, "int | float"]  # a mode's settings, e.g. {"masks": 1}; saved in the file's metadata


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


# --------------------------------------------------------------------------------------- controls

def encode_scaled(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pure-shrink control stores Δ itself (fp32, exact); λ is a setting, applied by :func:`decode_scaled`."""
    return {"delta": delta.detach().cpu().float().contiguous()}


def decode_scaled(fields: dict[str, torch.Tensor], shape: Sequence[int], scale: float) -> torch.Tensor:
    """Δ̂ = λ·Δ."""
    return (scale * fields["delta"].float()).reshape(*shape)


def encode_matched(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The matched-shrink control: Δ (fp32) and this matrix's λ*_m = mean|Δ|² / mean(Δ²), the shrink along Δ
    that BitDelta-Initial applies to it (see *Effective shrink* above); 0 for a matrix the fine-tune left alone."""
    import torch

    d = delta.detach().cpu().float()
    ms = d.double().pow(2).mean()
    lam = float(d.double().abs().mean() ** 2 / ms) if ms > 0 else 0.0
    return {"delta": d.contiguous(), "lambda": torch.tensor([lam], dtype=torch.float32)}


def decode_matched(fields: dict[str, torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """Δ̂ = λ*_m·Δ."""
    return (fields["lambda"].float() * fields["delta"].float()).reshape(*shape)


def matrix_seed(seed: int, name: str) -> int:
    """A 63-bit seed of (``seed``, matrix name): matrices of one shape get independent signs, and a matrix's
    signs do not depend on which other matrices were selected."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def encode_random_signs(delta: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The no-direction floor: α = mean|Δ| (BitDelta-Initial's), S ~ uniform ±1 from ``seed``, Δ̂ = α·S.

    Stored like a 1-bit mask (``signs`` packed, ``alpha``), so it costs exactly what BitDelta does."""
    import torch

    d = delta.detach().cpu().float()
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, tuple(d.shape), generator=g, dtype=torch.int64).to(torch.uint8)
    packed = pack_codes(bits.reshape(-1).numpy(), 1)
    return {"signs": torch.from_numpy(packed[None, :]), "alpha": d.abs().mean().reshape(1)}


def delta_inner(delta_hat: torch.Tensor, delta: torch.Tensor) -> tuple[float, float, float]:
    """(<Δ̂, Δ>, <Δ, Δ>, <Δ̂, Δ̂>) in float64: λ* = <Δ̂, Δ>/<Δ, Δ> is the least-squares multiple of Δ closest
    to Δ̂ (the effective shrink), <Δ̂, Δ>/√(<Δ, Δ><Δ̂, Δ̂>) the cosine between them."""
    h, d = delta_hat.detach().double().reshape(-1), delta.detach().double().reshape(-1).to(delta_hat.device)
    return float(h @ d), float(d @ d), float(h @ h)


# ---------------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Codec:
    """How one mode stores a matrix's delta: ``encode(Δ, settings, name)`` → fields, ``decode(fields, shape,
    settings)`` → Δ̂ (fp32). ``settings`` are the mode's numbers (``masks``; ``bits``, ``group``; ``rank``;
    ``scale``; ``seed``); ``name`` is the matrix's parameter name (only random signs use it, as a seed)."""

    encode: Callable[..., Fields]
    decode: Callable[[Fields, Sequence[int], Settings], torch.Tensor]


CODECS: dict[str, Codec] = {
    "sign": Codec(lambda d, s, name="": encode_signs(d, int(s["masks"])), lambda f, shape, s: decode_signs(f, shape)),
    "kbit": Codec(lambda d, s, name="": encode_kbit(d, int(s["bits"]), int(s["group"])),
                  lambda f, shape, s: decode_kbit(f, shape, int(s["bits"]), int(s["group"]))),
    "lowrank": Codec(lambda d, s, name="": encode_lowrank(d, int(s["rank"])),
                     lambda f, shape, s: decode_lowrank(f, shape)),
}

# the mechanism controls: same file format and build, but they answer "shrinkage or direction?", not "how
# well does k bits keep Δ?" (so fidelity sweeps over CODECS leave them out)
CONTROLS: dict[str, Codec] = {
    "scale": Codec(lambda d, s, name="": encode_scaled(d), lambda f, shape, s: decode_scaled(f, shape, s["scale"])),
    "scale_matched": Codec(lambda d, s, name="": encode_matched(d), lambda f, shape, s: decode_matched(f, shape)),
    "random_sign": Codec(lambda d, s, name="": encode_random_signs(d, matrix_seed(int(s["seed"]), name)),
                         lambda f, shape, s: decode_signs(f, shape)),
}


def codec(mode: str) -> Codec:
    """The codec of ``mode``; a ValueError names an unknown one (e.g. a file from a newer version)."""
    try:
        return CODECS[mode] if mode in CODECS else CONTROLS[mode]
    except KeyError:
        raise ValueError(f"unknown delta mode {mode!r}") from None
