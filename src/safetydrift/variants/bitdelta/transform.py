"""The ``bitdelta`` transform: build a variant from a fine-tune's compressed delta (Liu et al. 2024).

``build`` computes Δ = W_ft − W_ref for the selected matrices, compresses it (:mod:`.codecs`), heals the
1-bit scales (:mod:`.heal`), writes Ŵ = W_ref + Δ̂ as a transformers checkpoint (``hf/``) plus the delta
files (:mod:`.format`), and records the provenance (sizes, α statistics, healing curve, and the effective
shrink λ* = <Δ̂, Δ>/<Δ, Δ> per matrix, so any variant can be read as "≈ ``scale=λ*``").

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
        ``+`` separates patterns, so write "one or more" as ``{1,}``. Default:
        :data:`safetydrift.variants.checkpoint.DEFAULT_INCLUDE` (attention and MLP projections of any
        architecture's blocks); default exclude: none.
  rest=ft|ref   tensors not compressed (embeddings, norms, LM head, biases) come from the fine-tuned model
        (default, as BitDelta's code) or from the reference.
  heal=true|false (default true for 1-bit and masks; healing has nothing to train for bits/rank and the
        controls, so ``heal=true`` with those is an error), steps=50 (at most: ``patience=2`` stops
        healing after 2 held-out checks, every 5 steps, without a 2% gain and keeps the best check's α's;
        ``patience=0`` runs every step), batch=4, max_len=128, lr=1e-4,
        calib=64 (number of calibration texts), seed=0 (also seeds ``signs=random``). Counts must be
        >= 1 (steps >= 0); 0 is an error, not "the default".
  Fidelity (at most one; see :mod:`.codecs` for the maths):
  masks=m   m successive 1-bit residual masks; all α_i are healed. ``masks=1`` is plain BitDelta.
  bits=k    (2..8) k-bit group-wise asymmetric quantization of Δ, ``group=128`` elements per group.
  rank=r    truncated SVD of Δ, fp16 factors.
  Controls (alone: not with masks=/bits=/rank=/heal=true, nor with each other), to tell whether BitDelta
  gives safety back by shrinking Δ or by keeping its direction:
  scale=λ        (λ > 0) Δ̂ = λ·Δ exactly (fp32 Δ). Compare with the BitDelta variant's ``effective_scale``
                 (λ* ≈ 0.64 = 2/π for a Gaussian Δ at BitDelta-Initial); ``scale=1`` is the fine-tune.
                 Stored as fp32 (exact); it would take ``equivalent_bytes`` = the fp16 delta.
  signs=random   Δ̂ = α·S, α = mean|Δ| as BitDelta-Initial, S seeded uniform ±1 (``seed=``): the same
                 magnitude budget and bytes as 1 bit, no direction (the floor). Default ``signs=delta``.

``heal=false`` gives *BitDelta-Initial* (α = mean|Δ|).

Gaps from the paper (Liu et al. 2024, BitDelta):
  - healing runs ``steps=50`` by default (the paper: 200) to keep CPU builds short; pass ``steps=200``.
  - calibration text is the shipped benign mix (``datasets.pools.calibration_texts``), not C4, which
    cannot be fetched offline.
  - ``mse_before``/``mse_after`` in the provenance are measured on one held-out calibration batch when
    ``calib >= 2·batch``, else on a training batch (``mse_batch`` says which; see :mod:`.heal`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from safetydrift.context import Context
from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.params import Params, p
from safetydrift.registry import transforms
from safetydrift.spec import ComponentSpec, parse_recipe
from safetydrift.types import ResolvedModel
from safetydrift.variants.base import BuildResult, Transform
from safetydrift.variants.bitdelta.codecs import CONTROLS, delta_inner
from safetydrift.variants.bitdelta.format import DELTA_FILE, REST_FILE, compress, rest_path, save_delta
from safetydrift.variants.bitdelta.heal import HEAL_KEEPS, heal_scales
from safetydrift.variants.checkpoint import (
    DEFAULT_INCLUDE,
    calibration_items,
    checkpoint_rest,
    compile_patterns,
    render_calibration,
    save_checkpoint,
    select_matrices,
)

HF_SUBDIR = "hf"
ARTIFACT_FORMAT = 2  # in the cache key (key_material), so artifacts of older code are never served
FINETUNE_STEPS = ("finetune",)  # transform names that count as "the fine-tune" for ref=auto


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Summary of the α's for the provenance (how much healing moved them)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


# -------------------------------------------------------------------------------- the transform

@dataclass(frozen=True, kw_only=True)
class BitDeltaParams(Params):
    """``bitdelta:`` settings (see the module docstring); ``mode`` follows from bits=/rank=/masks=."""

    ref: str = field(default="auto", metadata=p("the reference: auto, base, parent, a chain index or a recipe"))
    include: tuple[str, ...] = field(default=DEFAULT_INCLUDE, metadata=p("regexes of the matrices to compress"))
    exclude: tuple[str, ...] = field(default=(), metadata=p("regexes of matrices to leave out"))
    rest: Literal["ft", "ref"] = field(default="ft", metadata=p("where uncompressed tensors come from"))
    heal: bool | None = field(default=None, metadata=p("train the 1-bit scales (default: true for 1-bit/masks)"))
    steps: int = field(default=50, metadata=p("healing steps, at most (0 = BitDelta-Initial)", ge=0))
    patience: int = field(default=2, metadata=p(
        "early stopping: held-out checks (every 5 steps) without a 2% gain before healing stops; 0 = never",
        ge=0))
    batch: int = field(default=4, metadata=p("healing batch size", ge=1))
    max_len: int = field(default=128, metadata=p("calibration tokens per text", ge=1))
    lr: float = field(default=1e-4, metadata=p("healing learning rate", gt=0))
    calib: int = field(default=64, metadata=p("calibration texts", ge=1))
    seed: int = field(default=0, metadata=p("healing, calibration and signs=random seed", ge=0))
    masks: int | None = field(default=None, metadata=p("residual 1-bit masks (default 1)", ge=1))
    bits: int | None = field(default=None, metadata=p("k-bit group-wise codes instead of 1 bit", ge=2, le=8))
    group: int | None = field(default=None, metadata=p("elements per k-bit group (default 128; bits= only)", ge=1))
    rank: int | None = field(default=None, metadata=p("truncated SVD of rank r instead of signs", ge=1))
    scale: float | None = field(default=None, metadata=p("control: Δ̂ = λ·Δ exactly (pure shrink, no healing)",
                                                         gt=0))
    matched: bool = field(default=False, metadata=p(
        "control: Δ̂ = λ*·Δ per matrix with BitDelta-Initial's own shrink λ* = mean|Δ|²/mean(Δ²) (no healing)",
        keyed_unless=False))
    signs: Literal["delta", "random"] = field(default="delta", metadata=p(
        "1-bit signs: sign(Δ) (BitDelta) or seeded random ±1 with α = mean|Δ| (control, no healing)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "ref", self.ref or "auto")
        chosen = [k for k in ("bits", "masks", "rank") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise SpecError(f"bitdelta: choose one of bits=, masks=, rank= (got {' and '.join(chosen)})")
        if self.group is not None and self.bits is None:
            raise SpecError("bitdelta: group= only applies with bits=")
        controls = [k for k, on in (("scale=", self.scale is not None), ("matched=true", self.matched),
                                    ("signs=random", self.signs == "random")) if on]
        if controls:
            others = [*controls[1:], *(f"{k}=" for k in chosen)]
            if others:
                raise SpecError(f"bitdelta: {controls[0]} is a control, not a fidelity option: "
                                f"it cannot be combined with {' or '.join(others)}")
            if self.heal:
                raise SpecError(f"bitdelta: {controls[0]} is a control and is never healed (drop heal=true)")
        if self.heal and self.mode != "sign":
            raise SpecError("bitdelta: heal=true trains the 1-bit scales; bits= and rank= have none (use heal=false)")
        if not (self.ref in ("auto", "base", "parent") or _is_int(self.ref)):
            parse_recipe(self.ref)  # a recipe: fail on bad syntax now, resolve at build time
        compile_patterns(self.include, "bitdelta include")
        compile_patterns(self.exclude, "bitdelta exclude")
        resolved = {"heal": self.mode == "sign" if self.heal is None else self.heal,
                    "masks": 1 if self.mode == "sign" and self.masks is None else self.masks,
                    "group": 128 if self.bits is not None and self.group is None else self.group}
        for name, value in resolved.items():  # defaults that depend on other settings, resolved once
            object.__setattr__(self, name, value)

    @property
    def mode(self) -> str:
        """``sign`` (1 bit, or ``masks`` residual masks), ``kbit`` (bits=) or ``lowrank`` (rank=); the controls
        ``scale`` (scale=) and ``random_sign`` (signs=random). The delta file's mode (:mod:`.codecs`)."""
        if self.bits is not None:
            return "kbit"
        if self.rank is not None:
            return "lowrank"
        if self.scale is not None:
            return "scale"
        if self.matched:
            return "scale_matched"
        return "random_sign" if self.signs == "random" else "sign"


@transforms.register("bitdelta", help="bitdelta[:ref=auto,heal=true,steps=50,masks=|bits=|rank=|scale=|signs=random]"
                                      " — 1-bit delta (scale=, signs=random: controls)")
class BitDelta(Transform):
    """Compress the fine-tune delta to 1 bit/weight (BitDelta), optionally healed, or to bits/masks/rank."""

    name = "bitdelta"
    Params = BitDeltaParams
    params: BitDeltaParams

    @classmethod
    def control(cls, params: Any) -> str | None:
        """``scale``, ``scale_matched`` or ``random_sign`` for a control's settings (:data:`.codecs.CONTROLS`)."""
        return params.mode if params.mode in CONTROLS else None

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        self._ref_cache: tuple[ResolvedModel, str] | None = None

    # ------------------------------------------------------------------------------ reference
    def reference(self, lineage: list[ResolvedModel]) -> tuple[ResolvedModel, str]:
        """(reference model, how it was chosen). ``lineage[-1]`` is the fine-tuned parent."""
        if self._ref_cache is not None:
            return self._ref_cache
        how = self.params.ref
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

        prm = self.params
        ref, _ = self.reference(lineage)
        material: dict[str, Any] = {"reference_sha256": weights_hash(ref), "format": ARTIFACT_FORMAT}
        if prm.heal and prm.steps:
            material["calibration_sha256"] = sha256_json(calibration_items(prm.calib, prm.seed))
            if prm.patience:
                material["heal_keeps"] = HEAL_KEEPS  # a build before it could keep α's worse than the initial
        return material

    # ---------------------------------------------------------------------------------- build
    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        import torch

        from safetydrift.backends.transformers_backend import load_hf
        from safetydrift.variants.builder import weights_hash

        prm = self.params
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
        names = select_matrices(ft_params.items(), prm.include, prm.exclude)
        if not names:
            raise SpecError(f"bitdelta: no 2-D weights match include={'+'.join(prm.include)} in {parent.spec}")
        for n in ft_params:
            mismatch = n not in ref_params or ref_params[n].shape != ft_params[n].shape
            if mismatch and (n in names or prm.rest == "ref"):
                raise UnsupportedError(
                        f"bitdelta: reference '{ref.spec}' does not match the fine-tuned model at {n!r}"
                    )
        meta = {"reference_sha256": ref_sha, "reference_spec": ref.spec, "finetuned_sha256": ft_sha,
                "finetuned_spec": parent.spec, "sign_zero": "+1", "rest": prm.rest}
        delta = compress(ref_params, ft_params, names, masks=prm.masks or 1, bits=prm.bits, group=prm.group or 128,
                         rank=prm.rank, scale=prm.scale, matched=prm.matched, signs=prm.signs, seed=prm.seed,
                         meta=meta)
        init_alphas = delta.alphas()
        healed = bool(prm.heal and prm.steps > 0)
        # BitDelta-Initial's effective shrink, before healing moves the α's (the model still holds W_ft)
        init_inner = {n: delta_inner(delta.decode(n), ft_params[n].float() - ref_params[n].float())
                      for n in names} if healed else None

        with torch.no_grad():
            if prm.rest == "ref":
                for n, p in model.named_parameters():
                    if n not in names:
                        p.copy_(ref_params[n])

        healing: dict[str, Any] = {"enabled": False}
        curve: list[dict[str, float]] = []
        if healed:
            teacher, _ = load_hf(parent.path, device)
            texts = [render_calibration(x, tok) for x in calibration_items(prm.calib, prm.seed)]
            res = heal_scales(model, teacher, tok, ref_params, delta, texts, steps=prm.steps, batch=prm.batch,
                              max_len=prm.max_len, lr=prm.lr, seed=prm.seed, progress=not self.ctx.quiet,
                              patience=prm.patience)
            del teacher
            for n, a in res.alphas.items():
                delta.fields[n]["alpha"] = a.float().contiguous()
            curve = res.loss_curve
            healing = {"enabled": True, "steps": prm.steps, "steps_run": res.steps_run, "patience": prm.patience,
                       "held_out_checks": res.checks, "batch": prm.batch, "max_len": prm.max_len,
                       "lr": prm.lr, "schedule": "cosine", "optimizer": "AdamW(weight_decay=0)",
                       "calibration_texts": len(texts), "seed": prm.seed,
                       "mse_before": res.mse_before, "mse_after": res.mse_after,
                       "mse_batch": "held-out" if res.mse_held_out else "training"}

        # Ŵ = W_ref + Δ̂, one code path for every mode (the same as apply_delta)
        inner: dict[str, tuple[float, float, float]] = {}
        with torch.no_grad():
            params = dict(model.named_parameters())
            for n in names:
                d_hat = delta.decode(n).to(ref_params[n].device)
                # Δ before params[n] is overwritten (without healing, ft_params[n] is that same storage)
                inner[n] = delta_inner(d_hat, ft_params[n].float() - ref_params[n].float())
                params[n].copy_(ref_params[n].float() + d_hat)
        hf_dir = save_checkpoint(model, Path(parent.path), out_dir / HF_SUBDIR)
        # what the delta alone cannot rebuild, read back from the saved checkpoint (what is evaluated)
        delta.rest, delta.tensors = checkpoint_rest(hf_dir, names, Path(ref.path), Path(parent.path), ref_state)
        delta_bytes = save_delta(out_dir / DELTA_FILE, delta)
        rest_bytes = rest_path(out_dir / DELTA_FILE).stat().st_size if delta.rest else 0

        n_el = delta.n_elements
        alphas = delta.alphas()
        alpha_stats = _stats(alphas)
        if init_alphas and alphas and prm.heal:
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
            "include": prm.include,
            "exclude": prm.exclude,
            "rest": prm.rest,
            "sign_zero": "+1",
            "n_matrices": len(names),
            "n_elements": n_el,
            "alpha": alpha_stats,
            "healing": healing,
            "delta_file": DELTA_FILE,
            "delta_bytes": delta_bytes,
            "delta_fp16_bytes": 2 * n_el,
            "bits_per_weight": 8 * delta_bytes / n_el,  # over the compressed matrices, rest excluded
            "effective_scale": _effective_scale(inner, init_inner),
            "rest_file": REST_FILE if delta.rest else None,
            "rest_tensors": len(delta.rest),
            "rest_bytes": rest_bytes,
            "checkpoint_dtype": "float32",
        }
        if prm.mode in CONTROLS:
            provenance["method"] = f"BitDelta control ({prm.mode}), not a compression"
            provenance["control"] = self.describe_control(delta_bytes, n_el)
        extra = {DELTA_FILE: delta_bytes, **({REST_FILE: rest_bytes} if delta.rest else {})}
        return BuildResult(kind="hf", path=hf_dir, provenance=provenance, loss_curve=curve, extra_files=extra)

    def describe_mode(self) -> str:
        prm = self.params
        if prm.mode == "kbit":
            return f"{prm.bits}-bit group={prm.group} asymmetric"
        if prm.mode == "lowrank":
            return f"rank={prm.rank} SVD (fp16 factors)"
        if prm.mode == "scale":
            return f"control: Δ̂ = {prm.scale:g}·Δ (fp32 delta)"
        if prm.mode == "scale_matched":
            return "control: Δ̂ = λ*·Δ per matrix, λ* = mean|Δ|²/mean(Δ²) (BitDelta-Initial's shrink; fp32 delta)"
        if prm.mode == "random_sign":
            return f"control: Δ̂ = mean|Δ|·random ±1 (seed={prm.seed})"
        return "1-bit" if prm.masks == 1 else f"{prm.masks} residual 1-bit masks"

    def describe_control(self, delta_bytes: int, n_elements: int) -> dict[str, Any]:
        """What a control is and what it would take to store: the file keeps an exact fp32 Δ for ``scale``
        (so the checkpoint rebuilds bit for bit), but a deployed shrunk delta is the fp16 delta (2 bytes per
        weight); random signs are stored exactly like 1-bit BitDelta (packed signs + one α per matrix)."""
        prm = self.params
        if prm.mode == "scale":
            return {"kind": "scale", "lambda": prm.scale, "formula": "Δ̂ = λ·Δ",
                    "equivalent_bytes": 2 * n_elements, "equivalent_of": "the fp16 delta",
                    "equivalent_bits_per_weight": 16.0}
        if prm.mode == "scale_matched":
            return {"kind": "scale_matched", "formula": "Δ̂ = λ*·Δ per matrix, λ* = mean|Δ|²/mean(Δ²)",
                    "equivalent_bytes": 2 * n_elements, "equivalent_of": "the fp16 delta",
                    "equivalent_bits_per_weight": 16.0}
        return {"kind": "random_sign", "seed": prm.seed, "formula": "Δ̂ = α·S, α = mean|Δ|, S seeded ±1",
                "equivalent_bytes": delta_bytes, "equivalent_of": "1-bit BitDelta (the same layout)",
                "equivalent_bits_per_weight": 8 * delta_bytes / n_elements}


def _effective_scale(inner: dict[str, tuple[float, float, float]],
                     initial: dict[str, tuple[float, float, float]] | None) -> dict[str, Any]:
    """λ* = <Δ̂, Δ>/<Δ, Δ> per matrix (matrices with Δ = 0 have none), its statistics, and pooled over all
    matrices (Σ<Δ̂, Δ>/Σ<Δ, Δ>: the one ``scale=λ`` closest to this variant) with the pooled cosine."""

    def summary(ips: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
        per = {n: hd / dd for n, (hd, dd, _) in ips.items() if dd > 0}
        hd, dd, hh = (sum(x[i] for x in ips.values()) for i in range(3))
        return {"pooled": hd / dd if dd > 0 else None,
                "cosine": hd / math.sqrt(dd * hh) if dd > 0 and hh > 0 else None,
                **_stats(list(per.values())), "per_matrix": per}

    out = {"definition": "λ* = <Δ̂, Δ>/<Δ, Δ> (least-squares multiple of Δ closest to Δ̂)", **summary(inner)}
    if initial is not None:
        out["initial"] = summary(initial)  # BitDelta-Initial, before healing
    return out


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _step_name(model: ResolvedModel) -> str | None:
    t = model.provenance.get("transform")
    return t.get("name") if isinstance(t, dict) else None
