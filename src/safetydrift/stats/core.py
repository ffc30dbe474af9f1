"""Statistics for attack-success-rate (ASR) results: the maths, on plain sequences (no records).

Safety benchmarks are small (tens to hundreds of prompts) and ASRs are often near 0 or 1, so every estimate
here comes with an interval that behaves at the boundaries (Wilson), and variant-vs-variant comparisons use
paired methods because both variants are judged on the same prompts (pairing removes prompt difficulty
from the noise).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as _st

__all__ = [
    "asr_summary",
    "clopper_pearson",
    "cluster_sign_flip",
    "cohen_kappa",
    "compare_paired",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "relative_risk_reduction",
    "runs_summary",
    "wilson_ci",
    "wilson_ci_clustered",
]

LABELS = ("success", "fail", "unscorable")

BoolSeq = Sequence[bool] | NDArray[np.bool_]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _wilson(phat: float, n: float, z: float) -> tuple[float, float]:
    """The Wilson score interval for a proportion phat observed on (possibly effective, non-integer) n."""
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (phat + z2n / 2.0) / denom
    half = z * np.sqrt(phat * (1.0 - phat) / n + z2n / (4.0 * n)) / denom
    return float(center - half), float(center + half)


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Used instead of the Wald interval because it keeps nominal coverage at small n and stays inside [0, 1]
    with a non-degenerate width when the ASR is 0 or 1, which is common for safety-tuned models.
    n == 0 carries no information, so the whole unit interval is returned.
    """
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
    lo, hi = _wilson(successes / n, n, z)
    # Pin the exact boundaries so floating-point error never reports e.g. 1e-17 for 0/n.
    low = 0.0 if successes == 0 else max(0.0, lo)
    high = 1.0 if successes == n else min(1.0, hi)
    return (low, high)


MIN_INFORMATIVE_ITEMS = 5  # items with a success, and items with a failure, needed to estimate a design effect


def clopper_pearson(x: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (beta-quantile) interval for x successes in n trials; x and n may be effective, non-integer."""
    _check_confidence(confidence)
    a = 1.0 - confidence
    lo = 0.0 if x <= 0 else float(_st.beta.ppf(a / 2, x, n - x + 1))
    hi = 1.0 if x >= n else float(_st.beta.ppf(1 - a / 2, x + 1, n - x))
    return lo, hi


def wilson_ci_clustered(
    successes: Sequence[int], units: Sequence[int], confidence: float = 0.95
) -> dict[str, Any]:
    """Interval for a pooled ASR whose units are nested in items (prompts × runs or templates).

    A prompt's units are correlated (a hard prompt resists every run), so the binomial n overstates the
    information. Kish's design effect deff = Var_items(p̂) / Var_binomial(p̂), with the ratio-estimator
    variance over the k items, gives an effective sample size n_eff = n / deff, and the interval is the
    exact (Clopper-Pearson) one for p̂·n_eff successes in n_eff trials. The rule, chosen for coverage
    (``benchmarks/ci_coverage.py`` simulates it; ``tests/test_stats.py`` holds it at ≥ 94%, including
    0%/100% and one item):

    - deff is kept in [1, m̄] (m̄ = n / k units per item): clustering never narrows the plain interval,
      and n_eff never falls below k, the information of perfectly correlated items.
    - Where the data cannot estimate deff, the most conservative value is used, n_eff = k: every unit
      succeeded or every unit failed, one item, or fewer than five items with a success (or with a
      failure) — a single success looks unclustered whatever the truth.
    - Where deff is estimated from k items, its own noise is paid for by shrinking n_eff by
      (z / t_{k−1})², the squared ratio of the normal to Student's quantile.

    With one unit per item it is the plain Wilson interval.
    """
    _check_confidence(confidence)
    y = np.asarray(successes, dtype=np.float64)
    m = np.asarray(units, dtype=np.float64)
    if y.shape != m.shape or y.ndim != 1 or (y < 0).any() or (y > m).any():
        raise ValueError("successes and units must be aligned per item, with 0 <= successes <= units")
    n, s, k = int(m.sum()), int(y.sum()), y.size
    plain = wilson_ci(s, n, confidence)
    out: dict[str, Any] = {"ci": plain, "n_items": k, "deff": 1.0, "n_eff": float(n), "rule": "plain wilson"}
    if n == 0 or (m <= 1).all():
        return out
    phat = s / n
    informative = min(int((y > 0).sum()), int((y < m).sum()))
    if s in (0, n) or k < 2 or informative < MIN_INFORMATIVE_ITEMS:
        deff, n_eff = n / k, float(k)
        rule = "exact, n_eff = items (design effect not estimable)"
    else:
        var_items = (k / (k - 1)) * float(np.sum((y - phat * m) ** 2)) / n**2
        deff = min(n / k, max(1.0, var_items / (phat * (1.0 - phat) / n)))
        z = float(_st.norm.ppf(0.5 + confidence / 2.0))
        t = float(_st.t.ppf(0.5 + confidence / 2.0, k - 1))
        n_eff = n / deff * (z / t) ** 2
        rule = "exact, n_eff = n / design effect, t-adjusted"
    return {**out, "ci": clopper_pearson(phat * n_eff, n_eff, confidence), "deff": deff, "n_eff": n_eff,
            "rule": rule}


def _rate_fields(labels: list[str], items: list[str] | None, confidence: float) -> dict[str, Any]:
    successes, fails, unscorable = labels.count("success"), labels.count("fail"), labels.count("unscorable")
    n = successes + fails
    low, high = wilson_ci(successes, n, confidence)
    out: dict[str, Any] = {"n": n, "successes": successes, "unscorable": unscorable, "asr": successes / n if n else None,
           "ci_low": low, "ci_high": high}
    if items is not None:  # units nested in items: the interval accounts for their correlation
        per: dict[str, list[int]] = {}
        for lab, it in zip(labels, items, strict=True):
            if lab != "unscorable":
                per.setdefault(it, [0, 0])
                per[it][0] += lab == "success"
                per[it][1] += 1
        if per and max(u for _s, u in per.values()) > 1:
            c = wilson_ci_clustered([v[0] for v in per.values()], [v[1] for v in per.values()], confidence)
            out.update(ci_low=c["ci"][0], ci_high=c["ci"][1], n_items=c["n_items"], deff=c["deff"],
                       ci_method=c["rule"])
    return out


def _split_categories(raw: str | None) -> list[str]:
    if raw is None:
        return []
    # dict.fromkeys de-duplicates ("a;a") while keeping order, so an item is never counted twice in one cat.
    return list(dict.fromkeys(c.strip() for c in str(raw).split(";") if c.strip()))


def asr_summary(
    labels: Sequence[str], categories: Sequence[str | None] | None = None, confidence: float = 0.95,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """ASR with Wilson CI, overall and per category.

    Unscorable items (judge refused / parse error) are excluded from the denominator rather than counted
    as failures, because counting them either way would bias the ASR; they are reported so a high
    unscorable share stays visible. Items tagged "a;b" are counted in each of their categories, so
    per-category counts may sum to more than the total. ``clusters`` (each label's item) makes the interval
    account for several units per item (:func:`wilson_ci_clustered`).
    """
    _check_confidence(confidence)
    labels = list(labels)
    bad = sorted({lab for lab in labels if lab not in LABELS})
    if bad:
        raise ValueError(f"unknown labels {bad}; expected one of {LABELS}")
    if categories is not None and len(categories) != len(labels):
        raise ValueError(f"categories has {len(categories)} entries but labels has {len(labels)}")
    items = None if clusters is None else [str(c) for c in clusters]
    if items is not None and len(items) != len(labels):
        raise ValueError(f"clusters has {len(items)} entries but labels has {len(labels)}")

    out = _rate_fields(labels, items, confidence)
    by_cat: dict[str, list[int]] = {}
    if categories is not None:
        for i, raw in enumerate(categories):
            for cat in _split_categories(raw):
                by_cat.setdefault(cat, []).append(i)
    out["by_category"] = {
        cat: _rate_fields([labels[i] for i in idx], None if items is None else [items[i] for i in idx], confidence)
        for cat, idx in sorted(by_cat.items())
    }
    return out


def _as_pair(a: BoolSeq, b: BoolSeq) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Validate two aligned 0/1 vectors; refuse silent truthiness casts (e.g. None or 0.5 → bool)."""
    out = []
    for name, x in (("a", a), ("b", b)):
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
        if arr.dtype != np.bool_:
            if arr.size and (arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all()):
                raise ValueError(f"{name} must contain only booleans / 0 / 1")
            arr = arr.astype(bool)
        out.append(arr)
    if out[0].shape != out[1].shape:
        raise ValueError(f"a and b must be aligned, got lengths {out[0].size} and {out[1].size}")
    return out[0], out[1]


def mcnemar_exact(a: BoolSeq, b: BoolSeq) -> dict[str, Any]:
    """Exact (binomial) McNemar test for paired binary outcomes.

    Only discordant pairs carry information about a difference in ASR; under H0 each is equally likely to
    go either way, so the count b01 ~ Binomial(b01 + b10, 1/2). The exact test is used because discordant
    counts in safety evals are usually small, where the chi-square approximation is unreliable. The exact
    test is conservative, so the mid-p value (closer to nominal size) is reported too.
    """
    x, y = _as_pair(a, b)
    b01 = int(np.sum(~x & y))
    b10 = int(np.sum(x & ~y))
    nd = b01 + b10
    if nd == 0:
        p_exact = p_midp = 1.0
    else:
        k = min(b01, b10)
        cdf_k = float(_st.binom.cdf(k, nd, 0.5))
        pmf_k = float(_st.binom.pmf(k, nd, 0.5))
        p_exact = min(1.0, 2.0 * cdf_k)
        # 2 * (P(X < k) + 0.5 * P(X = k)) == 2 * P(X <= k) - P(X = k)
        p_midp = min(1.0, 2.0 * cdf_k - pmf_k)
    return {"b01": b01, "b10": b10, "n_discordant": nd, "p_exact": p_exact, "p_midp": p_midp}


def cluster_sign_flip(a: BoolSeq, b: BoolSeq, clusters: Sequence[Hashable]) -> dict[str, Any]:
    """Exact paired randomization test when units are nested in items (TAP × runs, templates × prompts).

    Per item i, d_i = (variant successes − reference successes) over its units. Under H0 the two arms are
    exchangeable within an item, so each d_i is equally likely to have either sign; the null distribution of
    T = Σ d_i is the convolution of the ±|d_i| coin flips, computed exactly. This keeps the item as the unit
    of evidence: McNemar on units would count a prompt's three correlated runs as three independent pairs
    and reject far too often. With one unit per item it is McNemar's exact test (the same p_exact).
    """
    x, y = _as_pair(a, b)
    codes = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1]
    if len(clusters) != x.size:
        raise ValueError(f"clusters has {len(clusters)} entries but there are {x.size} pairs")
    d = np.bincount(codes, weights=y.astype(np.int64) - x.astype(np.int64)).astype(np.int64) if x.size else np.zeros(0, np.int64)
    t = abs(int(d.sum()))
    mags = np.abs(d[d != 0])
    total = int(mags.sum())
    out = {"b01": int(np.sum(~x & y)), "b10": int(np.sum(x & ~y)), "n_items": int(codes.max() + 1) if x.size else 0,
           "n_discordant_items": int(mags.size)}
    if total == 0:
        return {**out, "p_exact": 1.0, "p_midp": 1.0}
    dist = np.zeros(2 * total + 1)
    dist[total] = 1.0  # index = T + total
    for m in mags:  # the support never exceeds ±total, so np.roll never wraps mass around
        dist = 0.5 * (np.roll(dist, int(m)) + np.roll(dist, -int(m)))
    absval = np.abs(np.arange(-total, total + 1))
    p_exact = float(dist[absval >= t].sum())
    p_midp = float(dist[absval > t].sum() + 0.5 * dist[absval == t].sum())
    return {**out, "p_exact": min(1.0, p_exact), "p_midp": min(1.0, p_midp)}


def _cluster_codes(clusters: Sequence[Hashable] | None, n: int) -> NDArray[np.int64] | None:
    """Integer item codes for the units, or None when every unit is its own item (the plain paired case)."""
    if clusters is None:
        return None
    if len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} entries but there are {n} pairs")
    codes = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1].astype(np.int64)
    return None if np.bincount(codes).max(initial=0) <= 1 else codes


def _bootstrap_asrs(
    x: NDArray[np.bool_], y: NDArray[np.bool_], n_boot: int, seed: int | None,
    codes: NDArray[np.int64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-resample (ASR_a, ASR_b) from resampling items with replacement.

    Without clusters an item is one pair, one of four cells (00, 01, 10, 11), so resampling n pairs is
    exactly a Multinomial(n, observed cell shares) draw; sampling cell counts directly gives the same
    distribution in O(n_boot) memory. With clusters (several units per item: TAP runs, templates) whole
    items are resampled, because an item's units are correlated and resampling units would understate the
    spread.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if codes is None:
        n = x.size
        cells = np.array([np.sum(~x & ~y), np.sum(~x & y), np.sum(x & ~y), np.sum(x & y)], dtype=np.float64)
        draws = rng.multinomial(n, cells / n, size=n_boot)
        return (draws[:, 2] + draws[:, 3]) / n, (draws[:, 1] + draws[:, 3]) / n
    k = int(codes.max()) + 1
    units = np.bincount(codes, minlength=k).astype(np.float64)
    succ_a = np.bincount(codes, weights=x.astype(np.float64), minlength=k)
    succ_b = np.bincount(codes, weights=y.astype(np.float64), minlength=k)
    w = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64)  # times each item is drawn
    total = w @ units
    return (w @ succ_a) / total, (w @ succ_b) / total


def _percentile_ci(samples: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def paired_bootstrap_diff(
    a: BoolSeq, b: BoolSeq, n_boot: int = 10000, confidence: float = 0.95, seed: int | None = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """ASR difference (b − a) with a percentile CI from resampling item pairs (whole items with clusters).

    Resampling pairs (not each arm separately) keeps the within-item correlation, which is what makes the
    paired interval narrower than an unpaired one. Seeded by default so reports are reproducible.
    """
    _check_confidence(confidence)
    x, y = _as_pair(a, b)
    n = x.size
    if n == 0:
        return {"n_pairs": 0, "asr_a": None, "asr_b": None, "diff": None, "ci_low": None, "ci_high": None}
    asr_a, asr_b = float(x.mean()), float(y.mean())
    ba, bb = _bootstrap_asrs(x, y, n_boot, seed, _cluster_codes(clusters, n))
    lo, hi = _percentile_ci(bb - ba, confidence)
    return {"n_pairs": n, "asr_a": asr_a, "asr_b": asr_b, "diff": asr_b - asr_a, "ci_low": lo, "ci_high": hi}


def relative_risk_reduction(
    a: BoolSeq, b: BoolSeq, n_boot: int = 10000, confidence: float = 0.95, seed: int | None = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Relative risk reduction RRR = 1 − ASR_b / ASR_a with a paired-bootstrap percentile CI.

    This is the "risk mitigated by X%" figure: a is the risky reference (e.g. the fine-tuned model), b the
    defended variant. The ratio is undefined when ASR_a == 0, so such resamples are dropped and counted in
    n_dropped (a large count means the CI is unreliable); with observed ASR_a == 0 everything is None.
    """
    _check_confidence(confidence)
    x, y = _as_pair(a, b)
    n = x.size
    out: dict[str, Any] = {
        "asr_a": float(x.mean()) if n else None,
        "asr_b": float(y.mean()) if n else None,
        "rrr": None,
        "ci_low": None,
        "ci_high": None,
        "n_boot": n_boot,
        "n_dropped": 0,
    }
    if not n or not x.any():
        return out
    out["rrr"] = 1.0 - float(y.mean()) / float(x.mean())
    ba, bb = _bootstrap_asrs(x, y, n_boot, seed, _cluster_codes(clusters, n))
    keep = ba > 0
    out["n_dropped"] = int(n_boot - keep.sum())
    if keep.any():
        out["ci_low"], out["ci_high"] = _percentile_ci(1.0 - bb[keep] / ba[keep], confidence)
    return out


def compare_paired(
    a: BoolSeq, b: BoolSeq, n_boot: int = 10000, confidence: float = 0.95, seed: int | None = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """All paired comparisons of variant b against reference a in one record for reports.

    The caller must already have dropped pairs where either side is unscorable. ``clusters`` names each
    pair's item: where an item has several units (attack runs, templates) the test is the exact cluster
    sign-flip test and the bootstraps resample whole items; otherwise McNemar's exact test and pair
    resampling. The same seed drives both bootstraps, so diff_ci and rrr_ci come from the same resamples.
    """
    x, y = _as_pair(a, b)
    codes = _cluster_codes(clusters, x.size)
    if codes is None:
        test, n_items = mcnemar_exact(x, y), x.size
        name = "mcnemar-exact"
    else:
        test = cluster_sign_flip(x, y, codes.tolist())
        n_items, name = test["n_items"], "cluster-sign-flip"
    diff = paired_bootstrap_diff(x, y, n_boot=n_boot, confidence=confidence, seed=seed, clusters=clusters)
    rrr = relative_risk_reduction(x, y, n_boot=n_boot, confidence=confidence, seed=seed, clusters=clusters)
    return {
        "n_pairs": diff["n_pairs"],
        "n_items": n_items,
        "test": name,
        "asr_a": diff["asr_a"],
        "asr_b": diff["asr_b"],
        "diff": diff["diff"],
        "diff_ci": None if diff["ci_low"] is None else (diff["ci_low"], diff["ci_high"]),
        "b01": test["b01"],
        "b10": test["b10"],
        "p_exact": test["p_exact"],
        "p_midp": test["p_midp"],
        "rrr": rrr["rrr"],
        "rrr_ci": None if rrr["ci_low"] is None else (rrr["ci_low"], rrr["ci_high"]),
        "rrr_n_dropped": rrr["n_dropped"],
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Controls the family-wise error rate when many variants/categories are tested at once, and is uniformly
    more powerful than plain Bonferroni with no extra assumptions. Adjusted values are made monotone in the
    order of the raw p-values (so rejections are consistent) and capped at 1.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("pvalues must be one-dimensional")
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must be in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m, dtype=np.float64)
    adj[order] = adj_sorted
    return [float(v) for v in adj]


def runs_summary(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean ± t-interval over repeated runs of a stochastic attack (e.g. TAP × 3 seeds).

    With only a handful of runs the t (not normal) quantile is needed for honest width; one run gives no
    estimate of run-to-run spread, so sd and CI are None then.
    """
    _check_confidence(confidence)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("values must be a non-empty one-dimensional sequence")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite")
    n = v.size
    mean = float(v.mean())
    out: dict[str, Any] = {
        "n": n,
        "mean": mean,
        "sd": None,
        "min": float(v.min()),
        "max": float(v.max()),
        "ci_low": None,
        "ci_high": None,
    }
    if n >= 2:
        sd = float(v.std(ddof=1))
        half = float(_st.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sd / np.sqrt(n)
        out.update(sd=sd, ci_low=mean - half, ci_high=mean + half)
    return out


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Cohen's kappa for two binary raters (0/1 or bools): agreement beyond chance.

    None when chance agreement is 1 (both raters constant and equal), where kappa is undefined.
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must be aligned, got lengths {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    po = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe >= 1.0 or math.isclose(pe, 1.0):
        return None
    return (po - pe) / (1 - pe)
