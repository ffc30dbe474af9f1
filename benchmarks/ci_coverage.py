"""Coverage of the clustered ASR interval (stats.wilson_ci_clustered) by simulation.

Prompts × units (TAP runs, templates) with a beta-binomial prevalence per prompt: mean ``p``, intra-prompt
correlation ``icc``. Prints, per (prompts, units), the worst coverage over p and icc and the mean width,
next to the plain Wilson interval that counts every unit as independent. Run:

    python benchmarks/ci_coverage.py [--reps 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from safetydrift.stats import wilson_ci, wilson_ci_clustered

SHAPES = ((1, 2), (1, 3), (1, 6), (2, 3), (3, 3), (5, 3), (10, 3), (20, 3), (50, 3), (50, 6), (20, 10), (100, 3))
PREVALENCE = (0.02, 0.05, 0.1, 0.3, 0.5, 0.9)
ICC = (0.0, 0.1, 0.3, 0.8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    print(f"{'prompts':>7} {'units':>5} | {'clustered: worst cov':>20} {'at (p, icc)':>13} {'width':>6} | "
          f"{'plain: worst cov':>16} {'width':>6}")
    overall = 1.0
    for k, m in SHAPES:
        worst, worst_at, widths, p_worst, p_widths = 1.0, None, [], 1.0, []
        for p in PREVALENCE:
            for icc in ICC:
                hit = p_hit = 0
                for _ in range(a.reps):
                    pi = np.full(k, p) if icc == 0 else rng.beta(p * (1 - icc) / icc, (1 - p) * (1 - icc) / icc, k)
                    y = rng.binomial(m, pi)
                    lo, hi = wilson_ci_clustered(y, [m] * k)["ci"]
                    hit += lo <= p <= hi
                    widths.append(hi - lo)
                    plo, phi = wilson_ci(int(y.sum()), k * m)
                    p_hit += plo <= p <= phi
                    p_widths.append(phi - plo)
                if hit / a.reps < worst:
                    worst, worst_at = hit / a.reps, (p, icc)
                p_worst = min(p_worst, p_hit / a.reps)
        overall = min(overall, worst)
        print(f"{k:>7} {m:>5} | {worst:>20.3f} {str(worst_at):>13} {np.mean(widths):>6.3f} | "
              f"{p_worst:>16.3f} {np.mean(p_widths):>6.3f}")
    print(f"worst clustered coverage over the grid: {overall:.3f} ({a.reps} reps per cell, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
