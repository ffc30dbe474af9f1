"""Statistics: the maths (``core``: Wilson, McNemar, cluster sign-flip, bootstraps, RRR, Holm, kappa;
``continuous``: the paired Wilcoxon and the retention ratio of a continuous reading) and its application to
judged records (``asr``: ASR per cell; ``paired``: comparisons as one Holm family, where same-semantic judges
disagree, judge agreement). ``from safetydrift.stats import X``
works for all of them."""

from safetydrift.stats.asr import asr_rows, run_order
from safetydrift.stats.continuous import paired_wilcoxon, retention_ratio
from safetydrift.stats.core import (
    LABELS,
    asr_summary,
    cluster_sign_flip,
    cohen_kappa,
    compare_paired,
    holm,
    mcnemar_exact,
    paired_bootstrap_diff,
    relative_risk_reduction,
    runs_summary,
    wilson_ci,
    wilson_ci_clustered,
)
from safetydrift.stats.paired import (
    Pairing,
    direction_flips,
    judge_agreement,
    judge_disagreements,
    paired_comparisons,
    samples_by_cell,
)

__all__ = [
    "LABELS", "Pairing", "asr_rows", "asr_summary", "cluster_sign_flip", "cohen_kappa", "compare_paired",
    "direction_flips", "holm", "judge_agreement", "judge_disagreements", "mcnemar_exact", "paired_bootstrap_diff",
    "paired_comparisons", "paired_wilcoxon", "relative_risk_reduction", "retention_ratio", "run_order", "runs_summary",
    "samples_by_cell", "wilson_ci", "wilson_ci_clustered",
]
