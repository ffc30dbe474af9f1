"""Tests for safetydrift.stats: reference values, properties and seeded simulations of size/power/coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from safetydrift import stats as sd

# ---------------------------------------------------------------- helpers


def wilson_by_root_finding(s: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Independent Wilson reference: invert the score test |p̂ − p| = z·sqrt(p(1 − p)/n) numerically."""
    z = stats.norm.ppf(0.5 + conf / 2)
    phat = s / n

    def f(p: float) -> float:
        return (phat - p) ** 2 - z * z * p * (1 - p) / n

    # f(p̂) < 0 just off p̂ and f > 0 at the far end, so each side brackets exactly one root
    lo = 0.0 if s == 0 else optimize.brentq(f, 0.0, phat - 1e-12, xtol=1e-14)
    hi = 1.0 if s == n else optimize.brentq(f, phat + 1e-12, 1.0, xtol=1e-14)
    return lo, hi


def draw_pairs(rng: np.random.Generator, cells: tuple[float, float, float, float], size) -> tuple:
    """Paired outcomes from cell probabilities (p00, p01, p10, p11); a is the first digit, b the second."""
    c = rng.choice(4, size=size, p=cells)
    return c >= 2, (c % 2) == 1


def mc_slack(p: float, n_sim: int, k: float = 3.0) -> float:
    return k * math.sqrt(p * (1 - p) / n_sim)


# ---------------------------------------------------------------- wilson_ci

# Newcombe (1998), Stat Med 17:857-872, worked examples, method 3 (Wilson score, no continuity correction).
NEWCOMBE_1998 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("s", "n", "lo", "hi"), NEWCOMBE_1998)
def test_wilson_matches_newcombe_1998(s, n, lo, hi):
    got = sd.wilson_ci(s, n)
    # published values are rounded to 4 dp
    assert got[0] == pytest.approx(lo, abs=1e-4)
    assert got[1] == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize(
    ("s", "n", "conf"),
    [
        (0, 10, 0.95),
        (5, 10, 0.95),
        (10, 10, 0.95),
        (81, 263, 0.95),
        (1, 29, 0.95),
        (3, 7, 0.90),
        (40, 50, 0.99),
    ],
)
def test_wilson_matches_independent_root_finding(s, n, conf):
    got = sd.wilson_ci(s, n, conf)
    ref = wilson_by_root_finding(s, n, conf)
    assert got == pytest.approx(ref, abs=1e-6)


def test_wilson_known_small_n_values():
    # 0/10: upper = z²/(n+z²) = 3.8415/13.8415; 5/10 and 10/10 are symmetric to each other's bounds.
    assert sd.wilson_ci(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert sd.wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert sd.wilson_ci(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_wilson_edges_and_validation():
    assert sd.wilson_ci(0, 0) == (0.0, 1.0)
    lo, hi = sd.wilson_ci(0, 5)
    assert lo == 0.0 and 0 < hi < 1
    lo, hi = sd.wilson_ci(5, 5)
    assert hi == 1.0 and 0 < lo < 1
    # wider at higher confidence, and always contains p̂
    assert sd.wilson_ci(7, 20, 0.99)[0] < sd.wilson_ci(7, 20, 0.95)[0]
    lo, hi = sd.wilson_ci(7, 20)
    assert lo < 7 / 20 < hi
    for bad in [(-1, 5), (6, 5), (1, -1)]:
        with pytest.raises(ValueError):
            sd.wilson_ci(*bad)
    with pytest.raises(ValueError):
        sd.wilson_ci(1, 5, confidence=1.0)


# ---------------------------------------------------------------- asr_summary


def test_asr_summary_excludes_unscorable():
    labels = ["success", "fail", "unscorable", "success", "fail", "fail", "unscorable"]
    out = sd.asr_summary(labels)
    assert out["n"] == 5
    assert out["successes"] == 2
    assert out["unscorable"] == 2
    assert out["asr"] == pytest.approx(2 / 5)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(sd.wilson_ci(2, 5))
    assert out["by_category"] == {}


def test_asr_summary_all_unscorable_or_empty():
    out = sd.asr_summary(["unscorable", "unscorable"])
    assert out["n"] == 0 and out["asr"] is None and out["unscorable"] == 2
    assert (out["ci_low"], out["ci_high"]) == (0.0, 1.0)
    assert sd.asr_summary([])["asr"] is None


def test_asr_summary_by_category_multi_membership():
    labels = ["success", "fail", "success", "unscorable", "fail", "success"]
    cats = ["bio;cyber", "cyber", "bio", "bio; cyber", "", "weapons;bio;bio"]
    out = sd.asr_summary(labels, cats)
    by = out["by_category"]
    assert set(by) == {"bio", "cyber", "weapons"}
    # bio: items 0, 2, 3 (unscorable), 5 -> 3 successes of 3 scorable
    assert {k: by["bio"][k] for k in ("n", "successes", "unscorable", "asr")} == {
        "n": 3,
        "successes": 3,
        "unscorable": 1,
        "asr": 1.0,
    }
    # cyber: items 0, 1, 3 (unscorable) -> 1/2
    assert (by["cyber"]["n"], by["cyber"]["successes"], by["cyber"]["unscorable"]) == (2, 1, 1)
    assert by["cyber"]["asr"] == pytest.approx(0.5)
    assert (by["cyber"]["ci_low"], by["cyber"]["ci_high"]) == pytest.approx(sd.wilson_ci(1, 2))
    assert (by["weapons"]["n"], by["weapons"]["successes"]) == (1, 1)
    assert "by_category" not in by["bio"]
    # overall counts each item once
    assert (out["n"], out["successes"], out["unscorable"]) == (5, 3, 1)


def test_asr_summary_validation():
    with pytest.raises(ValueError):
        sd.asr_summary(["success", "maybe"])
    with pytest.raises(ValueError):
        sd.asr_summary(["success", "fail"], ["a"])


# ---------------------------------------------------------------- mcnemar_exact


def table_to_pairs(n00: int, n01: int, n10: int, n11: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([False] * n00 + [False] * n01 + [True] * n10 + [True] * n11)
    b = np.array([False] * n00 + [True] * n01 + [False] * n10 + [True] * n11)
    return a, b


@pytest.mark.parametrize(
    "table", [(10, 1, 9, 5), (20, 0, 6, 3), (5, 7, 3, 5), (0, 12, 30, 0), (40, 2, 2, 8), (3, 25, 24, 1)]
)
def test_mcnemar_matches_scipy_binomtest(table):
    a, b = table_to_pairs(*table)
    out = sd.mcnemar_exact(a, b)
    n01, n10 = table[1], table[2]
    assert (out["b01"], out["b10"], out["n_discordant"]) == (n01, n10, n01 + n10)
    ref = stats.binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue
    assert out["p_exact"] == pytest.approx(ref, rel=1e-9)
    k, m = min(n01, n10), n01 + n10
    midp_ref = min(1.0, 2 * (stats.binom.cdf(k - 1, m, 0.5) + 0.5 * stats.binom.pmf(k, m, 0.5)))
    assert out["p_midp"] == pytest.approx(midp_ref, rel=1e-9)
    assert out["p_midp"] <= out["p_exact"]
    if n01 != n10:
        assert out["p_midp"] < out["p_exact"]


def test_mcnemar_hand_value_and_symmetry():
    # b01 = 1, b10 = 9: p = 2 * (1 + 10) / 2**10
    a, b = table_to_pairs(10, 1, 9, 5)
    out = sd.mcnemar_exact(a, b)
    assert out["p_exact"] == pytest.approx(22 / 1024)
    assert out["p_midp"] == pytest.approx(2 * (1 + 0.5 * 10) / 1024)
    swapped = sd.mcnemar_exact(b, a)
    assert (swapped["b01"], swapped["b10"]) == (9, 1)
    assert swapped["p_exact"] == out["p_exact"]
    assert swapped["p_midp"] == out["p_midp"]
    # concordant pairs do not matter
    assert sd.mcnemar_exact(*table_to_pairs(100, 1, 9, 0))["p_exact"] == out["p_exact"]


def test_mcnemar_no_discordant_and_inputs():
    a, b = table_to_pairs(4, 0, 0, 6)
    out = sd.mcnemar_exact(a, b)
    assert out["p_exact"] == 1.0 and out["p_midp"] == 1.0 and out["n_discordant"] == 0
    assert sd.mcnemar_exact([], [])["p_exact"] == 1.0
    # plain lists and 0/1 ints are accepted
    assert sd.mcnemar_exact([1, 0, 1], [0, 0, 1])["b10"] == 1
    with pytest.raises(ValueError):
        sd.mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError):
        sd.mcnemar_exact([0.5, 1.0], [1, 0])


# ---------------------------------------------------------------- bootstrap / RRR / compare


def test_paired_bootstrap_diff_point_and_ci():
    a, b = table_to_pairs(10, 2, 12, 6)  # ASR_a = 18/30, ASR_b = 8/30
    out = sd.paired_bootstrap_diff(a, b, n_boot=4000, seed=1)
    assert out["n_pairs"] == 30
    assert out["asr_a"] == pytest.approx(0.6) and out["asr_b"] == pytest.approx(8 / 30)
    assert out["diff"] == pytest.approx(8 / 30 - 0.6)
    assert out["ci_low"] < out["diff"] < out["ci_high"] < 0
    # reproducible with the same seed
    assert sd.paired_bootstrap_diff(a, b, n_boot=4000, seed=1) == out
    # paired CI is narrower than the CI ignoring pairing when outcomes are positively correlated
    width = out["ci_high"] - out["ci_low"]
    se_unpaired = math.sqrt(0.6 * 0.4 / 30 + (8 / 30) * (22 / 30) / 30)
    assert width < 2 * 1.96 * se_unpaired


@pytest.mark.parametrize("conf", [0.90, 0.95])
def test_paired_bootstrap_ci_matches_normal_theory_at_large_n(conf):
    # n = 400, diff = 0.05 - 0.25; the bootstrap SE of a paired difference is sqrt((p01 + p10 - d²) / n),
    # so the percentile CI must sit at d ± z·SE (separates 90 / 95 / 97.5 % intervals by ~0.008).
    a, b = table_to_pairs(200, 20, 100, 80)
    p01, p10 = 20 / 400, 100 / 400
    d = p01 - p10
    half = stats.norm.ppf(0.5 + conf / 2) * math.sqrt((p01 + p10 - d * d) / 400)
    out = sd.paired_bootstrap_diff(a, b, n_boot=20000, confidence=conf, seed=0)
    assert out["ci_low"] == pytest.approx(d - half, abs=0.004)
    assert out["ci_high"] == pytest.approx(d + half, abs=0.004)


def test_paired_bootstrap_degenerate():
    a, b = table_to_pairs(5, 0, 0, 5)
    out = sd.paired_bootstrap_diff(a, b, n_boot=200)
    assert out["diff"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0
    assert sd.paired_bootstrap_diff([], [])["diff"] is None


def test_relative_risk_reduction():
    a, b = table_to_pairs(10, 2, 12, 6)
    out = sd.relative_risk_reduction(a, b, n_boot=4000, seed=3)
    assert out["rrr"] == pytest.approx(1 - (8 / 30) / (18 / 30))
    assert out["ci_low"] < out["rrr"] < out["ci_high"] <= 1.0
    assert out["n_dropped"] == 0
    # reference with ASR 0: undefined
    zero = sd.relative_risk_reduction(*table_to_pairs(5, 3, 0, 0), n_boot=100)
    assert zero["rrr"] is None and zero["ci_low"] is None
    # a single success in a: many resamples have ASR_a == 0 and must be dropped and reported
    rare = sd.relative_risk_reduction(*table_to_pairs(8, 0, 1, 0), n_boot=2000, seed=0)
    assert rare["rrr"] == pytest.approx(1.0)
    expected_drop = (8 / 9) ** 9  # P(no draw of the one success pair)
    assert rare["n_dropped"] / 2000 == pytest.approx(expected_drop, abs=0.05)


def test_compare_paired_bundles_consistently():
    a, b = table_to_pairs(10, 2, 12, 6)
    out = sd.compare_paired(a, b, n_boot=2000, seed=5)
    diff = sd.paired_bootstrap_diff(a, b, n_boot=2000, seed=5)
    rrr = sd.relative_risk_reduction(a, b, n_boot=2000, seed=5)
    mc = sd.mcnemar_exact(a, b)
    assert out["n_pairs"] == 30
    assert out["asr_a"] == diff["asr_a"] and out["asr_b"] == diff["asr_b"]
    assert out["diff"] == diff["diff"]
    assert out["diff_ci"] == (diff["ci_low"], diff["ci_high"])
    assert out["p_exact"] == mc["p_exact"] and out["p_midp"] == mc["p_midp"]
    assert out["rrr"] == rrr["rrr"] and out["rrr_ci"] == (rrr["ci_low"], rrr["ci_high"])
    empty = sd.compare_paired([], [], n_boot=10)
    assert empty["n_pairs"] == 0 and empty["diff_ci"] is None and empty["rrr"] is None
    assert empty["p_exact"] == 1.0


# ---------------------------------------------------------------- holm


def test_holm_hand_worked():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> max(0.06, 0.04)=0.06
    assert sd.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sd.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert sd.holm([0.02]) == pytest.approx([0.02])
    assert sd.holm([]) == []
    with pytest.raises(ValueError):
        sd.holm([0.1, 1.5])


def test_holm_properties():
    rng = np.random.default_rng(7)
    for _ in range(200):
        m = int(rng.integers(1, 15))
        p = rng.uniform(0, 0.3, size=m) ** 2
        adj = np.array(sd.holm(p))
        assert np.all(adj >= p - 1e-15)
        assert np.all(adj <= 1.0)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adj[order]) >= -1e-15)
        # never more conservative than Bonferroni, never less than the smallest-p step
        assert np.all(adj <= np.minimum(1.0, m * p) + 1e-15)


# ---------------------------------------------------------------- runs_summary


def test_runs_summary():
    vals = [0.30, 0.42, 0.36]
    out = sd.runs_summary(vals)
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(0.36)
    assert out["sd"] == pytest.approx(np.std(vals, ddof=1))
    assert (out["min"], out["max"]) == (0.30, 0.42)
    ref = stats.t.interval(0.95, df=2, loc=0.36, scale=np.std(vals, ddof=1) / math.sqrt(3))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(ref)
    one = sd.runs_summary([0.5])
    assert one["mean"] == 0.5 and one["sd"] is None and one["ci_low"] is None and one["ci_high"] is None
    with pytest.raises(ValueError):
        sd.runs_summary([])


# ---------------------------------------------------------------- simulations (seeded)

N_PAIRS = 50
# Equal marginals (ASR 0.3 for both) with positive within-item correlation (phi ≈ 0.29).
H0_CELLS = (0.55, 0.15, 0.15, 0.15)


def simulate_mcnemar_rejections(cells, n_sim: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    a, b = draw_pairs(rng, cells, (n_sim, N_PAIRS))
    rej_exact = rej_mid = 0
    for i in range(n_sim):
        out = sd.mcnemar_exact(a[i], b[i])
        rej_exact += out["p_exact"] <= alpha
        rej_mid += out["p_midp"] <= alpha
    return rej_exact / n_sim, rej_mid / n_sim


def test_sim_mcnemar_size_under_h0():
    n_sim = 2000
    exact, mid = simulate_mcnemar_rejections(H0_CELLS, n_sim, seed=2024)
    # exact test must hold its level (it is conservative); allow only Monte Carlo noise above 5%
    assert exact <= 0.05 + mc_slack(0.05, n_sim)
    # mid-p is near nominal and less conservative than the exact test
    assert 0.02 <= mid <= 0.08
    assert mid >= exact


def test_sim_mcnemar_power():
    # ASR_a = 0.6, ASR_b = 0.2 (true difference 0.4), correlated pairs
    cells = (0.35, 0.05, 0.45, 0.15)
    exact, mid = simulate_mcnemar_rejections(cells, n_sim=500, seed=11)
    assert exact >= 0.9
    assert mid >= exact


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_sim_wilson_coverage(p):
    n, n_sim = 50, 4000
    # exact coverage of the implementation (binomial-weighted); known to be about 0.970 (p=0.1), 0.935 (p=0.5)
    exact_cov = sum(
        stats.binom.pmf(s, n, p) for s in range(n + 1) if sd.wilson_ci(s, n)[0] <= p <= sd.wilson_ci(s, n)[1]
    )
    assert 0.93 <= exact_cov <= 0.975
    rng = np.random.default_rng(int(p * 1000))
    draws = rng.binomial(n, p, size=n_sim)
    covered = 0
    wald_covered = 0
    for s in draws:
        lo, hi = sd.wilson_ci(int(s), n)
        covered += lo <= p <= hi
        ph = s / n
        half = 1.959964 * math.sqrt(ph * (1 - ph) / n)
        wald_covered += ph - half <= p <= ph + half
    cov = covered / n_sim
    assert 0.92 <= cov <= 0.98
    assert abs(cov - exact_cov) <= mc_slack(exact_cov, n_sim, k=4.0)
    if p == 0.1:
        # sanity that this check has teeth: the Wald interval undercovers here and would fail it
        assert wald_covered / n_sim < 0.92


def test_sim_paired_bootstrap_coverage():
    # ASR_a = 0.4, ASR_b = 0.25, true difference b - a = -0.15, correlated pairs
    cells = (0.55, 0.05, 0.20, 0.20)
    true_diff = (cells[1] + cells[3]) - (cells[2] + cells[3])
    n_sim = 400
    rng = np.random.default_rng(99)
    a, b = draw_pairs(rng, cells, (n_sim, N_PAIRS))
    covered = 0
    widths = []
    for i in range(n_sim):
        out = sd.paired_bootstrap_diff(a[i], b[i], n_boot=500, seed=i)
        covered += out["ci_low"] <= true_diff <= out["ci_high"]
        widths.append(out["ci_high"] - out["ci_low"])
    cov = covered / n_sim
    assert 0.88 <= cov <= 0.99
    # The width must be the *paired* one, 2·z·sqrt((p01 + p10 − d²)/n): an interval that resampled each arm
    # separately would be sqrt((pa(1−pa) + pb(1−pb)) / (p01 + p10 − d²)) ≈ 1.37× wider and fail this.
    paired_w = 2 * 1.959964 * math.sqrt((cells[1] + cells[2] - true_diff**2) / N_PAIRS)
    assert abs(np.mean(widths) / paired_w - 1) < 0.10


# ---------------------------------------------------------------- clustered units (TAP × runs, templates)


def clustered_null(rng: np.random.Generator, items: int, units: int, shift: float) -> tuple:
    """H0 with item-level direction: per item the variant is ±shift more likely to succeed than the
    reference in *all* its units (equal marginal ASRs, but discordances within an item agree)."""
    p = rng.uniform(0.2, 0.8, items)
    d = rng.choice([-shift, shift], items)
    pa, pb = np.clip(p - d / 2, 0, 1), np.clip(p + d / 2, 0, 1)
    a = rng.random((items, units)) < pa[:, None]
    b = rng.random((items, units)) < pb[:, None]
    clusters = np.repeat(np.arange(items), units)
    return a.ravel(), b.ravel(), clusters


def test_cluster_sign_flip_equals_mcnemar_with_one_unit_per_item():
    rng = np.random.default_rng(7)
    for _ in range(200):
        a, b = draw_pairs(rng, (0.3, 0.2, 0.15, 0.35), int(rng.integers(1, 60)))
        got = sd.cluster_sign_flip(a, b, list(range(a.size)))
        assert got["p_exact"] == pytest.approx(sd.mcnemar_exact(a, b)["p_exact"], abs=1e-12)


def test_cluster_sign_flip_hand_worked():
    # items: d = +2 (both units flip to success), +1, −1 → T = 2; the null is the 8 sign patterns
    a = [0, 0, 0, 0, 1]
    b = [1, 1, 1, 0, 0]
    clusters = ["x", "x", "y", "y", "z"]
    out = sd.cluster_sign_flip(a, b, clusters)
    # T = Σε|d|: 2+1+1=4, 2+1−1=2, 2−1+1=2, 2−1−1=0, and the mirror images → P(|T| >= 2) = 6/8
    assert out["p_exact"] == pytest.approx(6 / 8)
    assert out["p_midp"] == pytest.approx(2 / 8 + 0.5 * 4 / 8)
    assert out["n_items"] == 3 and out["n_discordant_items"] == 3
    assert sd.cluster_sign_flip([1, 0], [1, 0], ["a", "a"])["p_exact"] == 1.0


def test_sim_clustered_size_naive_mcnemar_is_inflated():
    rng = np.random.default_rng(2026)
    n_sim, alpha = 1000, 0.05
    naive = clustered = 0
    for _ in range(n_sim):
        a, b, cl = clustered_null(rng, items=30, units=3, shift=0.6)
        naive += sd.mcnemar_exact(a, b)["p_exact"] <= alpha
        clustered += sd.cluster_sign_flip(a, b, cl)["p_exact"] <= alpha
    # the item-level test holds its level; treating the 90 units as independent pairs does not
    assert clustered / n_sim <= alpha + mc_slack(alpha, n_sim)
    assert naive / n_sim >= 0.10


def test_sim_clustered_power():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(200):
        p = rng.uniform(0.1, 0.4, 30)
        a = rng.random((30, 3)) < p[:, None]
        b = rng.random((30, 3)) < (p + 0.35)[:, None]
        hits += sd.cluster_sign_flip(a.ravel(), b.ravel(), np.repeat(np.arange(30), 3))["p_exact"] <= 0.05
    assert hits / 200 >= 0.9


def test_cluster_bootstrap_resamples_items():
    # Three identical units per item carry no more information than one: the clustered interval must match
    # the one-unit-per-item interval, and the naive unit-level interval is about 1/sqrt(3) as wide.
    rng = np.random.default_rng(3)
    a1, b1 = draw_pairs(rng, (0.4, 0.1, 0.3, 0.2), 40)
    a3, b3 = np.repeat(a1, 3), np.repeat(b1, 3)
    clusters = np.repeat(np.arange(40), 3)
    one = sd.paired_bootstrap_diff(a1, b1, n_boot=20000, seed=1)
    clu = sd.paired_bootstrap_diff(a3, b3, n_boot=20000, seed=1, clusters=clusters)
    naive = sd.paired_bootstrap_diff(a3, b3, n_boot=20000, seed=1)
    w_one, w_clu = one["ci_high"] - one["ci_low"], clu["ci_high"] - clu["ci_low"]
    w_naive = naive["ci_high"] - naive["ci_low"]
    assert clu["diff"] == pytest.approx(one["diff"])
    assert w_clu == pytest.approx(w_one, rel=0.12)
    assert w_naive < 0.75 * w_clu


def test_compare_paired_switches_to_the_clustered_test():
    a = [0, 0, 0, 0, 0, 0, 1, 0, 0]
    b = [1, 1, 1, 1, 1, 1, 0, 0, 0]
    plain = sd.compare_paired(a, b, n_boot=500)
    assert plain["test"] == "mcnemar-exact" and plain["n_items"] == 9
    single = sd.compare_paired(a, b, n_boot=500, clusters=list(range(9)))
    assert single["test"] == "mcnemar-exact" and single["p_exact"] == plain["p_exact"]
    clustered = sd.compare_paired(a, b, n_boot=500, clusters=[0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert clustered["test"] == "cluster-sign-flip" and clustered["n_items"] == 3 and clustered["n_pairs"] == 9
    # three items: d = +3, +3, −1 → T = 5; exact p = P(|T| >= 5) over ±3 ±3 ±1 = 4/8
    assert clustered["p_exact"] == pytest.approx(0.5)
    assert clustered["p_exact"] > plain["p_exact"]
    with pytest.raises(ValueError):
        sd.compare_paired(a, b, clusters=[0, 1])


def test_wilson_clustered_is_plain_wilson_without_clustering():
    y = [1, 0, 1, 1, 0, 0, 1]
    out = sd.wilson_ci_clustered(y, [1] * 7)
    assert out["ci"] == sd.wilson_ci(4, 7) and out["deff"] == 1.0
    # identical units per item and no between-item spread beyond binomial: never narrower than plain
    even = sd.wilson_ci_clustered([1, 1, 1, 1], [3, 3, 3, 3])
    plain = sd.wilson_ci(4, 12)
    assert even["ci"][0] <= plain[0] and even["ci"][1] >= plain[1]
    with pytest.raises(ValueError):
        sd.wilson_ci_clustered([3], [2])


def test_sim_wilson_clustered_coverage():
    """50 prompts × 6 templates with heterogeneous prompts (Beta(0.6, 1.4), mean 0.3)."""
    rng = np.random.default_rng(1)
    n_sim, items, units, truth = 1000, 50, 6, 0.3
    plain = clustered = 0
    for _ in range(n_sim):
        y = rng.binomial(units, rng.beta(0.6, 1.4, items))
        lo, hi = sd.wilson_ci(int(y.sum()), items * units)
        plain += lo <= truth <= hi
        lo, hi = sd.wilson_ci_clustered(y, [units] * items)["ci"]
        clustered += lo <= truth <= hi
    assert clustered / n_sim >= 0.95 - mc_slack(0.95, n_sim)
    assert plain / n_sim < 0.85  # counting the 300 units as independent undercovers badly


def test_clustered_interval_is_conservative_where_deff_cannot_be_estimated():
    # 0/6 over 2 prompts: the data cannot tell how correlated the runs are, so the two prompts are all the
    # information there is (an exact interval on 2), never the 6-unit interval the old rule gave ([0, 39]).
    zero = sd.wilson_ci_clustered([0, 0], [3, 3])
    assert zero["n_eff"] == 2 and zero["ci"][0] == 0.0
    assert zero["ci"][1] == pytest.approx(1 - 0.025 ** 0.5)  # Clopper-Pearson upper for 0/2
    assert zero["ci"][1] > sd.wilson_ci(0, 2)[1] > sd.wilson_ci(0, 6)[1]
    one = sd.wilson_ci_clustered([5], [6])  # one item: one observation's worth
    assert one["n_eff"] == 1 and one["ci"][1] > 0.999 and one["ci"][0] < 0.2
    full = sd.wilson_ci_clustered([3, 3, 3], [3, 3, 3])
    assert full["ci"][1] == 1.0 and full["ci"][0] == pytest.approx(0.025 ** (1 / 3))


@pytest.mark.parametrize("items,units", [(1, 3), (1, 6), (2, 3), (5, 3), (20, 3), (50, 6), (20, 10)])
def test_sim_clustered_interval_coverage_grid(items, units):
    """Coverage ≥ 94% over prevalence and intra-prompt correlation, including the 0%/100% and one-item cases
    (a beta-binomial per prompt; benchmarks/ci_coverage.py prints the full grid)."""
    rng = np.random.default_rng(items * 100 + units)
    n_sim = 300
    worst = 1.0
    for truth in (0.02, 0.1, 0.5, 0.9):
        for icc in (0.0, 0.3, 0.8):
            hits = 0
            for _ in range(n_sim):
                if icc == 0:
                    pi = np.full(items, truth)
                else:
                    pi = rng.beta(truth * (1 - icc) / icc, (1 - truth) * (1 - icc) / icc, items)
                lo, hi = sd.wilson_ci_clustered(rng.binomial(units, pi), [units] * items)["ci"]
                hits += lo <= truth <= hi
            worst = min(worst, hits / n_sim)
    assert worst >= 0.94 - mc_slack(0.94, n_sim)


def test_asr_summary_with_clusters():
    labels = ["success"] * 6 + ["fail"] * 6 + ["unscorable"]
    items = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "d", "d", "d"]
    cats = ["x"] * 6 + ["y"] * 7
    plain = sd.asr_summary(labels, cats)
    out = sd.asr_summary(labels, cats, clusters=items)
    assert out["asr"] == plain["asr"] == 0.5 and out["n"] == 12 and out["unscorable"] == 1
    assert out["n_items"] == 4 and out["deff"] > 1 and out["ci_method"].startswith("exact")
    assert out["ci_low"] < plain["ci_low"] and out["ci_high"] > plain["ci_high"]
    assert "deff" not in plain and set(out["by_category"]) == {"x", "y"}
    with pytest.raises(ValueError):
        sd.asr_summary(labels, clusters=items[:3])


def test_retention_ratio_is_the_ratio_of_mean_shifts_with_a_ci_that_covers() -> None:
    rng = np.random.default_rng(3)
    origin = rng.normal(4.0, 1.0, 300)
    ft = origin - 3.0 + rng.normal(0, 0.5, 300)
    x = origin + 0.4 * (ft - origin) + rng.normal(0, 0.5, 300)
    got = sd.retention_ratio(x, ft, origin)
    want = float(np.mean(x - origin) / np.mean(ft - origin))
    assert got["n"] == 300 and got["r"] == pytest.approx(want)
    lo, hi = got["r_ci"]
    assert lo < want < hi and lo < 0.4 < hi and hi - lo < 0.2
    # the ends: x = ft keeps everything, x = origin nothing
    assert sd.retention_ratio(ft, ft, origin)["r"] == pytest.approx(1.0)
    assert sd.retention_ratio(origin, ft, origin)["r"] == pytest.approx(0.0)


def test_retention_ratio_has_no_ci_where_the_fine_tune_did_not_clearly_move() -> None:
    rng = np.random.default_rng(4)
    origin = rng.normal(0, 1, 100)
    ft = origin + rng.normal(0, 1, 100)  # a noisy shift whose mean CI reaches 0
    ft = ft - np.mean(ft - origin) + 0.01
    got = sd.retention_ratio(origin + 0.005, ft, origin)
    assert got["r"] is None and got["r_ci"] is None and not got["established"]
    assert sd.retention_ratio(origin, origin, origin) == {"n": 100, "r": None, "r_ci": None, "established": False}
    with pytest.raises(ValueError):
        sd.retention_ratio([1.0, float("nan")], [0.0, 0.0], [1.0, 1.0])


def test_retention_ratio_resamples_numerator_and_denominator_together() -> None:
    # x keeps exactly 40% of every item's shift: with one resample for both means, every bootstrap R is 0.4
    rng = np.random.default_rng(5)
    origin = rng.normal(0, 1, 200)
    ft = origin - rng.uniform(1, 3, 200)
    got = sd.retention_ratio(origin + 0.4 * (ft - origin), ft, origin)
    assert got["established"] and got["r_ci"] == pytest.approx((0.4, 0.4))


def test_retention_ratio_is_not_established_when_a_resample_has_no_shift() -> None:
    # 4 of 150 items moved: the denominator's CI clears 0, but some resamples contain none of them (0/0)
    origin = np.zeros(150)
    ft = np.zeros(150)
    ft[:4] = -5.0
    got = sd.retention_ratio(ft * 0.5, ft, origin, n_boot=20000)
    assert got == {"n": 150, "r": None, "r_ci": None, "established": False}
