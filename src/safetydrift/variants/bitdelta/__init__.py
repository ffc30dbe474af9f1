"""``bitdelta``: compress a fine-tune's weight delta to ~1 bit per weight (BitDelta, Liu et al. 2024).

Used as in "Quantized delta weight is safety keeper" (Liu et al. 2024): the fine-tuned model is rebuilt
from its reference plus a compressed delta, and we measure how much of the fine-tune's safety drift
survives the compression. Per selected matrix (every 2-D linear weight of the transformer blocks)::

    Δ  = W_ft − W_ref
    Δ̂  = α · sign(Δ)            α initialised to mean|Δ|, then healed (trained on the fine-tune's logits)
    Ŵ  = W_ref + Δ̂

Two controls separate *why* such a variant gives safety back: ``scale=λ`` (Δ̂ = λ·Δ, pure shrinkage; compare
with the effective shrink λ* = <Δ̂, Δ>/<Δ, Δ> every build records) and ``signs=random`` (α·random ±1: the
same magnitude budget without Δ's direction, the floor).

The package reads in the order of a build:

- :mod:`.codecs`     the maths: 1-bit signs (and residual masks), k-bit groups, low rank, the controls;
                     bit packing; why one Adam step is exactly a 1-bit delta.
- :mod:`.heal`       scale distillation of the α's (BitDelta §3.2).
- :mod:`.format`     ``delta.safetensors`` / ``rest.safetensors`` and ``apply_delta`` (rebuild a variant).
- :mod:`.transform`  the ``bitdelta`` transform and its settings (``bitdelta:ref=…,heal=…,bits=…``).

Matrix selection, calibration text and checkpoint writing are shared with ``quantize`` and live in
:mod:`safetydrift.variants.checkpoint`. Everything public is importable from here, e.g.
``apply_delta(reference_dir, load_delta(variant_dir / "delta.safetensors"))``.
"""

from __future__ import annotations

from safetydrift.variants.bitdelta.codecs import (
    CODECS,
    CONTROLS,
    Codec,
    decode_kbit,
    decode_lowrank,
    decode_scaled,
    decode_signs,
    delta_inner,
    encode_kbit,
    encode_lowrank,
    encode_random_signs,
    encode_scaled,
    encode_signs,
    matrix_seed,
    pack_codes,
    sign,
    signed_sum,
    unpack_codes,
    unpack_signs,
)
from safetydrift.variants.bitdelta.format import (
    DELTA_FILE,
    FORMAT,
    REST_FILE,
    CompressedDelta,
    apply_delta,
    compress,
    delta_file_info,
    load_delta,
    load_reference,
    rest_path,
    save_delta,
)
from safetydrift.variants.bitdelta.heal import (
    HealResult,
    attach_healable,
    detach_healable,
    heal_scales,
    masked_logit_mse,
)
from safetydrift.variants.bitdelta.transform import ARTIFACT_FORMAT, FINETUNE_STEPS, HF_SUBDIR, BitDelta

__all__ = [
    "ARTIFACT_FORMAT",
    "CODECS",
    "CONTROLS",
    "DELTA_FILE",
    "FINETUNE_STEPS",
    "FORMAT",
    "HF_SUBDIR",
    "REST_FILE",
    "BitDelta",
    "Codec",
    "CompressedDelta",
    "HealResult",
    "apply_delta",
    "attach_healable",
    "compress",
    "decode_kbit",
    "decode_lowrank",
    "decode_scaled",
    "decode_signs",
    "delta_file_info",
    "delta_inner",
    "detach_healable",
    "encode_kbit",
    "encode_lowrank",
    "encode_random_signs",
    "encode_scaled",
    "encode_signs",
    "heal_scales",
    "load_delta",
    "load_reference",
    "masked_logit_mse",
    "matrix_seed",
    "pack_codes",
    "rest_path",
    "save_delta",
    "sign",
    "signed_sum",
    "unpack_codes",
    "unpack_signs",
]
