"""Experiments: a grid of variants × datasets × attacks × judges, each variant compared with its reference.

``safetydrift run EXPERIMENT.yaml --out DIR`` builds what is missing (artifact cache), evaluates what is
missing (result store: resume after a crash), measures utility, runs the paired comparisons and writes
``experiment.json``, ``results.jsonl``, ``report.html``, ``figures/`` and ``tables/``.
``safetydrift demo`` is the same on a packaged config for the shipped model.

- ``schema``: the YAML → a validated :class:`Experiment`;
- ``executors``: how eval requests run (``local``, ``ray``), each returning its requests' records;
- ``utility``: benign-task accuracy, over-refusal, perplexity and KL;
- ``run``: orchestration (build, eval, utility, comparisons, expectations, report);
- ``console``: the headline table.

The paired analysis itself lives in :mod:`safetydrift.stats` and the result types in
:mod:`safetydrift.records`.
"""

from safetydrift.experiments.console import print_headline
from safetydrift.experiments.executors import EXECUTORS, eval_local, eval_ray
from safetydrift.experiments.run import asr_rows, comparisons, ensure_not_running_inside, run_experiment
from safetydrift.experiments.schema import (
    Experiment,
    LensConfig,
    UtilityConfig,
    VariantDecl,
    load_experiment,
    packaged_config,
    parse_experiment,
    validate_specs,
)
from safetydrift.stats import direction_flips, judge_agreement

__all__ = [
    "EXECUTORS", "Experiment", "LensConfig", "UtilityConfig", "VariantDecl", "asr_rows", "comparisons",
    "direction_flips", "ensure_not_running_inside", "eval_local", "eval_ray", "judge_agreement",
    "load_experiment", "packaged_config", "parse_experiment", "print_headline", "run_experiment",
    "validate_specs",
]
