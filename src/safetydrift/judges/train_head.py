"""Training of the ``features-lr`` refusal judge (``judges/refusal_head.py``): the choice of its two settings
by grouped cross-validation, and the card. Run through ``python -m safetydrift.judges.train --model features-lr``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safetydrift.errors import JudgeError
from safetydrift.judges import refusal_features as rf
from safetydrift.judges.cv import assign_folds, binary_metrics, rows_sha256, save_card
from safetydrift.judges.refusal_head import KIND, Inputs, fit_head, inputs
from safetydrift.judges.trained import MINILM, WEIGHTS_FILE, Card, file_sha256


def cross_validate(x: Inputs, y: np.ndarray, requests: Sequence[str], c: float, k: int, folds: int, seed: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold logits, folds by request (``cv.assign_folds``): no fold scores an answer to a request it
    was trained on."""
    fold = np.array(assign_folds(list(requests), folds, seed))
    out = np.zeros(len(y))
    for f in range(folds):
        tr, te = fold != f, fold == f
        head = fit_head(x.feats[tr], x.resp_emb[tr], y[tr], c, k, None if weights is None else weights[tr])
        out[te] = head.logits(x.feats[te], x.resp_emb[te])
    return out


def select(x: Inputs, y: np.ndarray, requests: Sequence[str], grid_c: Sequence[float], grid_k: Sequence[int],
           folds: int = 5, seeds: Sequence[int] = (0, 1, 2), log: Any = print) -> tuple[float, int, dict[str, float]]:
    """(C, k) by the one-standard-error rule on the mean out-of-fold accuracy over ``seeds`` fold assignments:
    of the settings within one binomial standard error of the best, the simplest (fewest components, then
    the strongest regularisation). Why not the best: the grid's top scores differ by less than their noise,
    and the judge is used on other requests and framings than it was trained on, where simpler travels better."""
    scores: dict[str, float] = {}
    for k in grid_k:
        for c in grid_c:
            acc = [float(np.mean((cross_validate(x, y, requests, c, k, folds, s) >= 0) == y)) for s in seeds]
            scores[f"C={c:g},k={k}"] = round(float(np.mean(acc)), 4)
            log(f"  C={c:g} k={k}: cv accuracy {scores[f'C={c:g},k={k}']}")
    top = max(scores.values())
    floor = top - float(np.sqrt(top * (1 - top) / len(y)))
    ok = [(k, c) for k in grid_k for c in grid_c if scores[f"C={c:g},k={k}"] >= floor]
    k, c = min(ok)
    log(f"  best {top}, one-SE floor {floor:.4f}: C={c:g}, k={k}")
    return c, k, scores


def train_feature_card(semantic: str, rows: Sequence[Any], out: Path, *, cv: int = 5, threshold: float = 0.5,
                       status: str = "final", name: str | None = None, train_info: dict[str, Any] | None = None,
                       grid_c: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0), grid_k: Sequence[int] = (0, 8, 16, 32),
                       seed: int = 0, log: Any = print, embed: Any = None) -> Any:
    """Choose (C, k) by grouped CV, record the out-of-fold metrics of the choice, fit on all rows, write the card."""
    if semantic != "refusal":
        raise JudgeError(f"the {KIND} model has refusal features only, not {semantic!r}")
    t0 = time.perf_counter()
    x = inputs([(r.request, r.response) for r in rows], embed)
    y = np.array([r.label for r in rows])
    requests = [r.request for r in rows]
    log(f"{KIND}: {len(rows)} rows featurised in {time.perf_counter() - t0:.1f} s")
    c, k, grid = select(x, y, requests, grid_c, grid_k, cv, (seed, seed + 1, seed + 2), log)
    oof = cross_validate(x, y, requests, c, k, cv, seed)
    scores: dict[str, Any] = {"folds": cv, "grouped_by": "request", "threshold": threshold, "selected": {"C": c, "k": k},
                              "grid_mean_accuracy_3_fold_seeds": grid,
                              "selection": "one-standard-error rule (fewest components, then smallest C)",
                              **binary_metrics(y, (1 / (1 + np.exp(-oof)) >= threshold).astype(int))}
    if (per := by_source(rows, y, (1 / (1 + np.exp(-oof)) >= threshold).astype(int))) is not None:
        scores["by_source"] = per
    head = fit_head(x.feats, x.resp_emb, y, c, k)
    return write_card(head, out, semantic=semantic, kind=KIND, threshold=threshold, status=status, name=name,
                      hyperparameters={"C": c, "k": k, "features": rf.FEATURES_VERSION,
                                       "feature_names": list(rf.NAMES)},
                      train_info=train_info, rows=rows, y=y, scores=scores, t0=t0)


def write_card(head: Any, out: Path, *, semantic: str, kind: str, threshold: float, status: str, name: str | None,
               hyperparameters: dict[str, Any], train_info: dict[str, Any] | None, rows: Sequence[Any],
               y: np.ndarray, scores: dict[str, Any], t0: float) -> Any:
    """The weights (numpy arrays only, written then renamed) and the card of a fitted feature head: shared by
    every features-lr model (``refusal_head``, ``harm_head``)."""
    from safetensors.numpy import save_file

    from safetydrift.judges.classifier import embedding_model_path

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({n: np.ascontiguousarray(v, dtype=np.float64) for n, v in sorted(head.tensors().items())}, str(tmp))
    tmp.replace(weights)
    card = Card(name=name or out.name, semantic=semantic, model=kind, base_model=MINILM,
                base_model_sha256=file_sha256(embedding_model_path() / "model.safetensors"),
                hyperparameters=hyperparameters, threshold=threshold, status=status,
                train={**(train_info or {}), "rows_sha256": rows_sha256(rows), "n": len(rows), "n_positive": int(y.sum())},
                cv=scores, weights=WEIGHTS_FILE, weights_sha256=file_sha256(weights),
                weights_bytes=weights.stat().st_size, train_seconds=round(time.perf_counter() - t0, 1))
    save_card(card, out)
    return card


def by_source(rows: Sequence[Any], y: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
    """Out-of-fold metrics per kind of source (the part before '+'), when the rows have more than one."""
    kinds = sorted({r.source.split("+")[0] for r in rows if r.source})
    if len(kinds) < 2:
        return None
    return {s: binary_metrics(y[m], pred[m]) for s in kinds
            if (m := np.array([r.source.split("+")[0] == s for r in rows])).any()}
