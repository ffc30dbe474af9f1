"""The ``features-lr`` judge model: a logistic head over :mod:`refusal_features` (+ a few principal components
of the response's MiniLM embedding), as a judge card like the trained networks of ``judges/trained.py``.

Why a linear head: a few hundred labelled rows fit ~20 interpretable features well and a network badly
(the LoRA cross-encoder reached 0.735 held-out accuracy; this head's cross-validation is in its card). The
principal components let the head see the *style* of an answer (a lecture, a ramble, a compliance
template) beyond the hand-written features; their number is chosen by grouped cross-validation.

The weights file holds numpy arrays only (safetensors, no pickle): the feature means and scales, the
response-embedding mean and components, the coefficients and the intercept. Training and inference share
:func:`design` (trained = served function). Training: ``python -m safetydrift.judges.train --model
features-lr ...`` (``judges/train_head.py``: grouped k-fold CV by request on the training rows only, then a
fit on all of them). This module imports no training code, so the served judge (``judges/trained.py``) can
load it lazily without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safetydrift.errors import JudgeError
from safetydrift.judges import refusal_features as rf

KIND = "features-lr"
CLIP = 4.0


@dataclass
class FeatureHead:
    """x → standardised [features, PCA(response embedding)] → p = sigmoid(x · coef + intercept)."""

    mu: np.ndarray
    sd: np.ndarray
    emb_mean: np.ndarray  # [384]
    components: np.ndarray  # [k, 384]; k may be 0
    coef: np.ndarray
    intercept: float

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mu": self.mu, "sd": self.sd, "emb_mean": self.emb_mean, "components": self.components,
                "coef": self.coef, "intercept": np.array([self.intercept])}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], where: str) -> FeatureHead:
        need = {"mu", "sd", "emb_mean", "components", "coef", "intercept"}
        if set(t) != need:
            raise JudgeError(f"{where}: weights do not fit a {KIND} head (have {sorted(t)})")
        head = cls(*(np.asarray(t[k], dtype=np.float64) for k in ("mu", "sd", "emb_mean", "components", "coef")),
                   float(t["intercept"][0]))
        if head.coef.shape[0] != len(rf.NAMES) + head.components.shape[0] or head.mu.shape != head.coef.shape:
            raise JudgeError(f"{where}: head has {head.coef.shape[0]} weights, expected {len(rf.NAMES)} features + "
                             f"{head.components.shape[0]} components ({rf.FEATURES_VERSION})")
        return head

    def logits(self, feats: np.ndarray, resp_emb: np.ndarray) -> np.ndarray:
        return standardise(design(feats, resp_emb, self.emb_mean, self.components), self.mu, self.sd) @ self.coef \
            + self.intercept


def design(feats: np.ndarray, resp_emb: np.ndarray, emb_mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    return np.hstack([feats, (resp_emb - emb_mean) @ components.T]) if len(components) else feats


def standardise(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """z-scores clipped to ±CLIP: a response unlike any training row (a rare script, a 1-word answer) moves
    the logit by a bounded amount instead of by hundreds."""
    return np.clip((x - mu) / sd, -CLIP, CLIP)


def pca(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, top-k components) by SVD; each component's sign fixed (largest |entry| positive): reproducible."""
    mean = emb.mean(axis=0)
    if k == 0:
        return mean, np.zeros((0, emb.shape[1]))
    _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
    comp = vt[:k]
    signs = np.sign(comp[np.arange(len(comp)), np.abs(comp).argmax(axis=1)])
    return mean, comp * signs[:, None]


def fit_head(feats: np.ndarray, resp_emb: np.ndarray, y: np.ndarray, c: float, k: int,
             weights: np.ndarray | None = None) -> FeatureHead:
    from sklearn.linear_model import LogisticRegression

    mean, comp = pca(resp_emb, k)
    x = design(feats, resp_emb, mean, comp)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit(standardise(x, mu, sd), y, sample_weight=weights)
    return FeatureHead(mu, sd, mean, comp, clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))


# ----------------------------------------------------------------------------------- pair inputs
@dataclass
class Inputs:
    """What the head reads for a list of pairs: the feature rows and the responses' embeddings."""

    feats: np.ndarray
    resp_emb: np.ndarray


def inputs(pairs: Sequence[tuple[str, str]], embed: Callable[[Sequence[str]], np.ndarray] | None = None,
           featurize: Callable[..., np.ndarray] = rf.featurize) -> Inputs:
    """Feature rows (``featurize(requests, responses, embed)``: the refusal features, or another head's) and the
    responses' embeddings, each text embedded once."""
    if embed is None:
        from safetydrift.judges.classifier import embed as embed_minilm

        embed = embed_minilm
    memo: dict[str, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:  # the responses are embedded once for both parts
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            memo.update(zip(new, np.asarray(embed(new), dtype=np.float64), strict=True))
        return np.array([memo[t] for t in texts]) if texts else np.zeros((0, rf_dim(memo)))

    feats = featurize([q for q, _ in pairs], [r for _, r in pairs], cached)
    return Inputs(feats, cached([r for _, r in pairs]))


def rf_dim(memo: dict[str, np.ndarray]) -> int:
    return next(iter(memo.values())).shape[0] if memo else 384


def load_head(directory: Path, card: Any) -> FeatureHead:
    from safetensors.numpy import load_file

    from safetydrift.judges.classifier import file_sha256

    weights = directory / card.weights
    if card.weights_sha256 and file_sha256(weights) != card.weights_sha256:
        raise JudgeError(f"judge card {card.name!r}: {weights.name} does not match the sha256 in its card")
    if card.hyperparameters.get("features") != rf.FEATURES_VERSION:
        raise JudgeError(f"judge card {card.name!r} was trained on {card.hyperparameters.get('features')}, this "
                         f"version computes {rf.FEATURES_VERSION}: retrain it")
    return FeatureHead.from_tensors(load_file(str(weights)), f"judge card {card.name!r}")
