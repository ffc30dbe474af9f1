"""Healing (scale distillation, BitDelta §3.2): train the α's so the compressed model's logits match the
fine-tune's on calibration text, with the signs frozen::

    min_α  mean_{tokens} ‖ z_ft(x) − z_α(x) ‖²        AdamW (no weight decay), cosine schedule

Each compressed module's weight becomes a :class:`HealableDelta` that recomputes W = W_ref + Σ_i α_i·S_i at
every forward (S_i fixed ±1 int8 tensors, W_ref a fp32 buffer), so gradients reach the α's only. After
training the weights are plain parameters again, holding W_ref + Σ α_i·S_i with the healed α's.

``mse_before``/``mse_after`` are the logit MSE on one held-out calibration batch (the last ``batch``
texts, never trained on) when there are at least 2·batch texts; otherwise on a training batch, and
:class:`HealResult` says so (``mse_held_out``).

Early stopping (``patience`` > 0, held-out batch only): every ``check_every`` steps the held-out MSE is
measured; healing stops when it has not fallen below (1 − ``min_gain``)·best for ``patience`` checks in a
row, and the α's of the best check are kept, the initial α's (step 0) included: healing never ends worse
than BitDelta-Initial on the held-out batch. ``steps`` is then an upper bound. On the demo's fine-tune the
held-out MSE flattens after about half of the 50 steps (the train loss falls 0.55 → 0.04 in 15 steps and
then wanders around 0.02-0.03), so this is where a CPU build spends its time for nothing. Because the same
batch decides when to stop, ``mse_after`` is then slightly optimistic; the curve records every check.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from safetydrift.errors import UnsupportedError
from safetydrift.variants.bitdelta.codecs import signed_sum, unpack_signs

if TYPE_CHECKING:
    import torch

    from safetydrift.variants.bitdelta.format import CompressedDelta


# ----------------------------------------------------------------------------------------- healing

#: what early stopping keeps: the best held-out check, the initial α's included (2026-12-03; cache key material)
HEAL_KEEPS = "best-check-including-initial"

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
    steps_run: int = 0  # optimizer steps taken (< steps when early stopping ended healing)
    checks: list[dict[str, float]] | None = None  # held-out MSE at each early-stopping check


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
    patience: int = 0,
    check_every: int = 5,
    min_gain: float = 0.02,
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
    stopping = patience > 0 and held_out
    # the initial α's (BitDelta-Initial) are the first candidate: healing never returns α's that are worse on
    # the held-out batch than where it started. Without this, a start that already matches the teacher (one
    # Adam step is exactly a 1-bit delta, so the loss is ~0) lets Adam's size-free steps (≈ lr each, as large
    # as α itself for a small fine-tune) walk the α's away, and the last, worse α's were kept.
    best, stale, steps_run = mse_before, 0, 0
    best_alphas = {name: h.alpha.detach().clone() for name, h in healables.items()} if stopping else None
    checks: list[dict[str, float]] = [{"step": 0, "mse": mse_before}] if stopping else []
    for step in bar:
        loss = loss_on(next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        steps_run = step + 1
        value = loss.detach().item()
        curve.append({"step": step, "loss": value})
        bar.set_postfix(loss=f"{value:.3e}")
        if stopping and steps_run % check_every == 0:
            with torch.no_grad():
                mse = float(loss_on(fixed))
            checks.append({"step": steps_run, "mse": mse})
            if mse < (1.0 - min_gain) * best:
                best, stale = mse, 0
                best_alphas = {name: h.alpha.detach().clone() for name, h in healables.items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    with torch.no_grad():
        mse_after = float(loss_on(fixed))
        if best_alphas is not None and mse_after > best:  # back to the best check's α's
            for name, h in healables.items():
                h.alpha.copy_(best_alphas[name])
            mse_after = float(loss_on(fixed))
    alphas = {name: h.alpha.detach().cpu().clone() for name, h in healables.items()}
    for name, h in healables.items():
        with torch.no_grad():
            detach_healable(student, name, h().detach())
    return HealResult(alphas, curve, mse_before, mse_after, held_out, steps_run, checks or None)

