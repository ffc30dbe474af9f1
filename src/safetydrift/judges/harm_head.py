"""The ``harm-features-lr`` judge model: the ``features-lr`` logistic head of ``refusal_head.py`` over the harm
features of :mod:`harm_features` (refusal stance + request harmfulness + substance), as a judge card.

Why the same head: the harm training side has a few hundred labelled rows, like the refusal one, and the
same argument holds (an interpretable linear head fits them; a network learns their surface). Training and
inference share :func:`inputs` and ``refusal_head.design`` (trained = served function). Training: ``python -m
safetydrift.judges.train --semantic harm --model harm-features-lr ...`` (grouped k-fold CV by request on the
training rows only, the one-standard-error rule, then a fit on all rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safetydrift.errors import JudgeError
from safetydrift.judges import harm_features as hf
from safetydrift.judges import refusal_features as rf
from safetydrift.judges import refusal_head as rh
from safetydrift.judges.refusal_head import FeatureHead, Inputs, fit_head

KIND = "harm-features-lr"


def _check(head: FeatureHead, where: str) -> FeatureHead:
    if head.coef.shape[0] != len(hf.NAMES) + head.components.shape[0] or head.mu.shape != head.coef.shape:
        raise JudgeError(f"{where}: head has {head.coef.shape[0]} weights, expected {len(hf.NAMES)} features + "
                         f"{head.components.shape[0]} components ({hf.HARM_FEATURES_VERSION})")
    return head


def head_from_tensors(t: dict[str, np.ndarray], where: str) -> FeatureHead:
    need = {"mu", "sd", "emb_mean", "components", "coef", "intercept"}
    if set(t) != need:
        raise JudgeError(f"{where}: weights do not fit a {KIND} head (have {sorted(t)})")
    head = FeatureHead(*(np.asarray(t[k], dtype=np.float64) for k in ("mu", "sd", "emb_mean", "components", "coef")),
                       float(t["intercept"][0]))
    return _check(head, where)


def inputs(pairs: Sequence[tuple[str, str]], embed: Callable[[Sequence[str]], np.ndarray] | None = None,
           request_harm: Callable[[Sequence[str]], np.ndarray] | None = None) -> Inputs:
    """The harm features of each pair and its response's embedding (``refusal_head.inputs`` with harm features)."""
    return rh.inputs(pairs, embed, lambda q, r, e: hf.featurize(q, r, e, request_harm))


def load_head(directory: Path, card: Any) -> FeatureHead:
    from safetensors.numpy import load_file

    from safetydrift.judges.classifier import file_sha256

    weights = directory / card.weights
    if card.weights_sha256 and file_sha256(weights) != card.weights_sha256:
        raise JudgeError(f"judge card {card.name!r}: {weights.name} does not match the sha256 in its card")
    want = (card.hyperparameters.get("features"), card.hyperparameters.get("refusal_features"))
    if want != (hf.HARM_FEATURES_VERSION, rf.FEATURES_VERSION):
        raise JudgeError(f"judge card {card.name!r} was trained on {want}, this version computes "
                         f"{(hf.HARM_FEATURES_VERSION, rf.FEATURES_VERSION)}: retrain it")
    return head_from_tensors(load_file(str(weights)), f"judge card {card.name!r}")


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def kappa(y: np.ndarray, pred: np.ndarray) -> float:
    po, pa, pb = float((y == pred).mean()), float(y.mean()), float(pred.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def choose_threshold(oofs: Sequence[np.ndarray], y: np.ndarray, grid: Sequence[float] = THRESHOLDS) -> tuple[float, dict[str, float]]:
    """The operating point by out-of-fold κ (mean over fold seeds), training rows only. Why not 0.5: the head
    is fitted with balanced class weights (positives are ~10% of the rows), which puts p = 0.5 well inside
    the negatives; κ, not accuracy, is the target because accuracy rewards calling everything harmless."""
    mean = {f"{t:g}": round(float(np.mean([kappa(y, (1 / (1 + np.exp(-o)) >= t).astype(int)) for o in oofs])), 4)
            for t in grid}
    best = max(grid, key=lambda t: (mean[f"{t:g}"], -t))
    return best, mean


def train_harm_card(rows: Sequence[Any], out: Path, *, cv: int = 5, threshold: float | None = None,
                    status: str = "final",
                    name: str | None = None, train_info: dict[str, Any] | None = None,
                    grid_c: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0), grid_k: Sequence[int] = (0, 8, 16),
                    seed: int = 0, log: Any = print, embed: Any = None, request_harm: Any = None) -> Any:
    """(C, k) by grouped CV with the one-SE rule (``train_head.select``), out-of-fold metrics of the choice
    overall and per source, a fit on all rows, the card."""
    from safetydrift.judges.cv import binary_metrics
    from safetydrift.judges.train_head import by_source, cross_validate, select, write_card

    t0 = time.perf_counter()
    x = inputs([(r.request, r.response) for r in rows], embed, request_harm)
    y = np.array([r.label for r in rows])
    if y.sum() < 2 or y.sum() > len(y) - 2:
        raise JudgeError(f"harm training needs both labels (have {int(y.sum())} positives of {len(y)})")
    requests = [r.request for r in rows]
    log(f"{KIND}: {len(rows)} rows featurised in {time.perf_counter() - t0:.1f} s")
    c, k, grid = select(x, y, requests, grid_c, grid_k, cv, (seed, seed + 1, seed + 2), log)
    oofs = [cross_validate(x, y, requests, c, k, cv, s) for s in (seed, seed + 1, seed + 2)]
    by_t: dict[str, float] = {}
    if threshold is None:
        threshold, by_t = choose_threshold(oofs, y)
        log(f"  threshold by out-of-fold kappa: {threshold:g} ({by_t})")
    oof = oofs[0]
    pred = (1 / (1 + np.exp(-oof)) >= threshold).astype(int)
    scores: dict[str, Any] = {"folds": cv, "grouped_by": "request", "threshold": threshold, "selected": {"C": c, "k": k},
                              "grid_mean_accuracy_3_fold_seeds": grid,
                              "selection": "one-standard-error rule (fewest components, then smallest C)",
                              "threshold_kappa_3_fold_seeds": by_t, **binary_metrics(y, pred)}
    if (per := by_source(rows, y, pred)) is not None:
        scores["by_source"] = per
    head = _check(fit_head(x.feats, x.resp_emb, y, c, k), KIND)
    return write_card(head, out, semantic="harm", kind=KIND, threshold=threshold, status=status, name=name,
                      hyperparameters={"C": c, "k": k, "features": hf.HARM_FEATURES_VERSION,
                                       "refusal_features": rf.FEATURES_VERSION, "feature_names": list(hf.NAMES)},
                      train_info=train_info, rows=rows, y=y, scores=scores, t0=t0)
