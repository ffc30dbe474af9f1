"""Paired readings on a continuous scale (a per-prompt refusal margin): the signed-rank test of a shift and the
share of a shift a variant keeps. Apart from ``core`` (binary outcomes) because their question differs: how far
a whole distribution moved, not how many answers flipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

from safetydrift.stats.core import _check_confidence, _percentile_ci


def paired_wilcoxon(a: Sequence[float], b: Sequence[float], n_boot: int = 10000, confidence: float = 0.95,
                    seed: int | None = 0) -> dict[str, Any]:
    """A continuous paired reading (e.g. a per-prompt margin): d_i = b_i − a_i, mean d̄ with a percentile CI
    from resampling pairs, and the two-sided Wilcoxon signed-rank test of H0 "d is symmetric about 0".

    W⁺ = Σ_{d_i > 0} rank(|d_i|) over the nonzero d_i (zeros dropped, Wilcoxon's convention; none left →
    p = 1). ``test`` says which null: "wilcoxon-exact" (all 2^k sign patterns; k ≤ 50 and no tied |d_i|),
    else "wilcoxon-normal" (z with the tie-corrected variance, no continuity correction), via scipy.
    """
    _check_confidence(confidence)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must be aligned one-dimensional sequences of finite numbers")
    d = y - x
    if d.size == 0:
        return {"n_pairs": 0, "n_nonzero": 0, "diff": None, "diff_ci": None, "p": None, "test": None}
    boot = np.random.default_rng(seed).choice(d, size=(n_boot, d.size)).mean(axis=1)
    nz = d[d != 0]
    exact = nz.size <= 50 and np.unique(np.abs(nz)).size == nz.size
    p = float(_st.wilcoxon(nz, method="exact" if exact else "approx").pvalue) if nz.size else 1.0
    return {"n_pairs": int(d.size), "n_nonzero": int(nz.size), "diff": float(d.mean()),
            "diff_ci": _percentile_ci(boot, confidence), "p": min(1.0, p),
            "test": "wilcoxon-exact" if exact else "wilcoxon-normal"}


def retention_ratio(x: Sequence[float], ft: Sequence[float], origin: Sequence[float], n_boot: int = 10000,
                    confidence: float = 0.95, seed: int | None = 0) -> dict[str, Any]:
    """How much of a shift a variant keeps, per item i on the same items (e.g. prompts):

        R = mean_i (x_i − o_i) / mean_i (ft_i − o_i)

    (1: x keeps all of ft's shift away from the origin o, 0: none), with a percentile CI from resampling
    items (numerator and denominator from the same resample). Why a CI and not only a test of x vs ft: a
    small systematic shift moves every item the same way, so its signed-rank p sits at the floor however
    small the shift is; R's interval says how large it is. Where the denominator's own interval reaches 0
    (the fine-tune did not clearly move) the ratio is unbounded: R is not established, and ``r`` and ``r_ci``
    are None (``established`` False). Resamples are drawn in chunks (memory stays O(chunk·n))."""
    _check_confidence(confidence)
    a, f, o = (np.asarray(v, dtype=np.float64) for v in (x, ft, origin))
    if a.ndim != 1 or a.shape != f.shape or a.shape != o.shape or not all(np.isfinite(v).all() for v in (a, f, o)):
        raise ValueError("x, ft and origin must be aligned one-dimensional sequences of finite numbers")
    none = {"n": int(a.size), "r": None, "r_ci": None, "established": False}
    num, den = a - o, f - o
    if a.size == 0 or abs(den.mean()) < 1e-12:
        return none
    rng = np.random.default_rng(seed)
    bn, bd = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, 2_000_000 // a.size)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, a.size, size=(k, a.size))  # one resample for numerator and denominator
        bn[start : start + k], bd[start : start + k] = num[idx].mean(axis=1), den[idx].mean(axis=1)
    lo, hi = _percentile_ci(bd, confidence)
    if lo <= 0 <= hi:
        return none
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = bn / bd
    if not np.isfinite(ratios).all():  # a resample whose mean shift is exactly 0: the ratio is unbounded
        return none
    return {"n": int(a.size), "r": float(num.mean() / den.mean()), "r_ci": _percentile_ci(ratios, confidence),
            "established": True}
