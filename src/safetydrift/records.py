"""Typed records: everything that crosses a module boundary, and the formats they are stored in.

One judged sample is a :class:`Record` (one line of ``results.jsonl``); an experiment's outcome is an
:class:`ExperimentResult` (``experiment.json``) made of rows (:class:`AsrRow`, :class:`Comparison`,
:class:`ExpectationCheck`, ...); ``summary.json`` is an :class:`EvalSummary`. They are frozen dataclasses
so that the runner, the analysis and the report read attributes a type checker can see, instead of
``.get("…")`` on dicts whose keys nobody wrote down.

Formats are versioned: a record line carries ``"schema": 2``, ``experiment.json`` and ``summary.json``
carry ``"format": 2``. Version 1 (files written before the version field existed) has the same fields
and is read too, so an old ``results.jsonl`` still resumes and an old ``experiment.json`` still loads.
A version newer than this code is refused rather than half-read. How a row becomes JSON and back is in
``rowjson.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from safetydrift.errors import DataError
from safetydrift.rowjson import _plain, _Row, _version
from safetydrift.types import GenerationConfig, Label

__all__ = [
    "RECORD_SCHEMA", "RESULT_FORMAT", "AsrRow", "Comparison", "DirectionFlip", "EvalSummary", "Expectation",
    "ExpectationCheck", "ExperimentResult", "GuardRow", "JudgeAgreement", "JudgeDisagreement", "LensSummary",
    "Rate", "Record", "RunProvenance", "RunsSummary", "TapTree", "UtilityRow", "VariantSummary",
]

RECORD_SCHEMA = 2  # results.jsonl: 1 = no "schema" field (same fields otherwise)
RESULT_FORMAT = 2  # experiment.json, summary.json: 1 = no "format" field
LABELS: tuple[Label, ...] = ("success", "fail", "unscorable")


# ------------------------------------------------------------------------------------- judged samples
@dataclass(frozen=True, kw_only=True)
class Record(_Row):
    """One judged sample: a unit of an attack on one item, answered by one model, judged by one judge.

    The resume key is (run_key, item_id, unit, judge); ``run_key`` hashes everything that decides the
    answer, and the rest is provenance for whoever audits the number later.
    """

    run_key: str
    model: str  # the full recipe string
    model_sha256: str | None = None
    dataset: str = ""
    dataset_sha256: str = ""
    attack: str = "direct"
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    seed: int = 0
    backend: str | None = None
    libraries: Mapping[str, str | None] = field(default_factory=dict)
    backend_info: Mapping[str, Any] | None = None  # only where this run generated (not for a re-judged answer)
    item_id: str
    unit: str
    category: str | None = None
    behavior: str = ""
    target: str | None = None
    prompt: str = ""
    response: str | None = None  # None when the generation failed (then ``error`` says why)
    error: str | None = None
    n_tokens: int = 0
    latency_s: float = 0.0
    gen_meta: Mapping[str, Any] = field(default_factory=dict)
    judge: str
    judge_version: str | None = None  # a trained judge's card and weights hash: a changed card never mixes in
    verdict: Label
    score: float | None = None
    reason: str = ""
    judge_raw: Any = None
    unit_meta: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # attack-specific (e.g. TAP's tree)
    ts: str = ""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"backend_info", "judge_version"})
    _format_key: ClassVar[str | None] = "schema"
    _format: ClassVar[int] = RECORD_SCHEMA

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The store's resume key: one record per (run, item, unit, judge)."""
        return (self.run_key, self.item_id, self.unit, self.judge)

    @property
    def scored(self) -> bool:
        return self.verdict != "unscorable"

    @property
    def success(self) -> bool:
        return self.verdict == "success"


# ------------------------------------------------------------------------------------------ ASR rows
@dataclass(frozen=True, kw_only=True)
class Rate(_Row):
    """An ASR with its Wilson interval (``stats.asr_summary`` for one group or one harm category)."""

    n: int  # scored samples (unscorable ones are not in the denominator)
    successes: int
    unscorable: int
    asr: float | None
    ci_low: float
    ci_high: float
    n_items: int | None = None  # the next three only where items have several units (clustered interval)
    deff: float | None = None
    ci_method: str | None = None

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"n_items", "deff", "ci_method"})


@dataclass(frozen=True, kw_only=True)
class RunsSummary(_Row):
    """ASR per attack run (``run=0``, ``run=1``, ...) and their mean with a t-interval."""

    per_run: tuple[float, ...]
    n: int
    mean: float
    sd: float | None
    min: float
    max: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True, kw_only=True)
class AsrRow(_Row):
    """ASR of one model (a named variant, or a model spec naming itself) on one dataset × attack × judge."""

    variant: str
    recipe: str
    dataset: str
    attack: str
    judge: str
    n: int
    successes: int
    unscorable: int
    asr: float | None
    ci_low: float
    ci_high: float
    n_items: int | None = None
    deff: float | None = None
    ci_method: str | None = None
    by_category: Mapping[str, Rate] = field(default_factory=dict)
    runs: RunsSummary | None = None
    model_sha256: str | None = None
    dataset_sha256: str | None = None

    _omit_if_none: ClassVar[frozenset[str]] = Rate._omit_if_none | {"model_sha256", "dataset_sha256"}

    @property
    def cell(self) -> tuple[str, str, str]:
        return (self.dataset, self.attack, self.judge)

    @property
    def rate(self) -> Rate:
        return Rate(n=self.n, successes=self.successes, unscorable=self.unscorable, asr=self.asr,
                    ci_low=self.ci_low, ci_high=self.ci_high, n_items=self.n_items, deff=self.deff,
                    ci_method=self.ci_method)


# --------------------------------------------------------------------------------- paired analysis
@dataclass(frozen=True, kw_only=True)
class Comparison(_Row):
    """A paired test of a variant against its reference (``kind`` "reference") or against another member
    of its family that an expectation needs (``kind`` "expectation"), on one dataset × attack × judge."""

    variant: str
    reference: str
    dataset: str
    attack: str
    judge: str
    kind: Literal["reference", "expectation"] = "reference"
    n_pairs: int
    n_items: int
    test: str  # "mcnemar-exact" or "cluster-sign-flip"
    asr_ref: float
    asr_variant: float
    diff: float  # asr_variant - asr_ref
    diff_ci: tuple[float, float] | None
    p_exact: float
    p_midp: float
    rrr: float | None
    rrr_ci: tuple[float, float] | None
    b01: int
    b10: int
    p_holm: float | None = None  # Holm-adjusted over every comparison of the run

    @property
    def cell(self) -> tuple[str, str, str]:
        return (self.dataset, self.attack, self.judge)


@dataclass(frozen=True, kw_only=True)
class JudgeAgreement(_Row):
    judge_a: str
    judge_b: str
    n: int
    agreement: float | None
    kappa: float | None


@dataclass(frozen=True, kw_only=True)
class DirectionFlip(_Row):
    """A variant whose ASR goes up under one judge and down under another (same dataset and attack), whatever
    the judges measure: what older runs recorded; a run now records :class:`JudgeDisagreement` s."""

    variant: str
    reference: str
    dataset: str
    attack: str
    diffs: Mapping[str, float]  # judge → diff


@dataclass(frozen=True, kw_only=True)
class JudgeDisagreement(_Row):
    """Two judges of one semantic read a comparison differently: the ASR change goes up under one and down
    under the other ("direction"), it is significant (Holm p < α) under only one ("significance"), or both.
    Judges of different semantics are never paired: they measure different things (``stats.paired``)."""

    variant: str
    reference: str
    dataset: str
    attack: str
    judge_a: str
    judge_b: str
    diff_a: float  # ASR change against the reference under judge_a
    diff_b: float
    p_a: float | None  # Holm-adjusted p of judge_a's comparison
    p_b: float | None
    kind: Literal["direction", "significance", "both"]


# ------------------------------------------------------------------------------------- expectations
@dataclass(frozen=True, kw_only=True)
class Expectation(_Row):
    """A claim from the literature about one variant (an ``expect:`` entry of an experiment)."""

    variant: str
    asr: str  # up | down | highest | lowest
    claim: str = ""
    source: str = ""
    alpha: float = 0.05
    max_utility_loss: float | None = None
    dataset: str | None = None
    attack: str | None = None
    judge: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExpectationCheck(_Row):
    """An expectation checked against the run: what was expected, what was measured, the verdict."""

    variant: str
    reference: str | None
    expected: str
    claim: str
    source: str
    dataset: str
    attack: str
    judge: str
    alpha: float
    asr_variant: float | None
    asr_reference: float | None
    diff: float | None
    p_holm: float | None
    verdict: str
    why: str
    runner_up: str | None = None  # highest/lowest only
    task_acc: float | None = None
    task_acc_reference: float | None = None
    over_refusal: float | None = None
    over_refusal_reference: float | None = None
    kl_to_reference: float | None = None
    utility_loss: float | None = None
    utility_verdict: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.expected in ("up", "down"):  # only a family ranking has a runner-up
            del out["runner_up"]
        return out


# ------------------------------------------------------------------------------ experiment sections
@dataclass(frozen=True, kw_only=True)
class VariantSummary(_Row):
    """A variant as built: its recipe, weights, size on disk and build manifest."""

    name: str
    recipe: str
    reference: str | None = None
    kind: str = "hf"
    weights_sha256: str | None = None
    size_bytes: int | None = None
    bits_per_weight: float | None = None
    build_seconds: float | None = None
    manifest: Mapping[str, Any] | None = None
    family: str | None = None
    wrappers: tuple[Mapping[str, Any], ...] = ()  # serving-time guards


@dataclass(frozen=True, kw_only=True)
class UtilityRow(_Row):
    """What a variant costs on benign work (task accuracy, multiple-choice accuracy, over-refusal, ppl, KL) and
    its refusal margin."""

    variant: str
    benign_task_acc: float | None = None
    benign_task_n: int = 0
    over_refusal: float | None = None  # share of benign requests the refusal judge calls a refusal
    over_refusal_n: int = 0
    ppl: float | None = None
    kl_to_reference: float | None = None
    refusal_margin: float | None = None  # mean m(x) over the first dataset's prompts (analysis/margin.py)
    refusal_margin_n: int = 0  # prompts in that mean
    margin_diff: float | None = None  # mean of m_variant(x) − m_reference(x) over the same prompts
    margin_diff_ci: tuple[float, float] | None = None  # bootstrap 95% CI, resampling prompts
    margin_p: float | None = None  # two-sided Wilcoxon signed-rank (margin_meta["test"]: exact or normal)
    margin_p_holm: float | None = None  # Holm over the run's margin tests only (not the ASR family)
    margin_meta: Mapping[str, Any] | None = None  # open details: engine, test, pairs, prompts at the floor
    # R: the share of the reference's margin shift (from its own reference) this variant keeps, bootstrap 95% CI
    margin_retention: float | None = None
    margin_retention_ci: tuple[float, float] | None = None
    # first-token KL(reference ‖ variant) on the same harmful prompts (analysis/margin.harmful_kl), nats
    kl_harmful: float | None = None
    kl_harmful_n: int | None = None
    # log-likelihood multiple choice on mc-utility (analysis/mc.py): accuracy, length-normalised accuracy
    mc_acc: float | None = None
    mc_acc_ci: tuple[float, float] | None = None  # Wilson 95%
    mc_acc_norm: float | None = None
    mc_acc_norm_ci: tuple[float, float] | None = None
    mc_n: int = 0
    mc_chance: float | None = None  # mean of 1/choices: the accuracy of a guess
    mc_diff: float | None = None  # mc_acc − the reference's, on the same items
    mc_diff_ci: tuple[float, float] | None = None  # paired bootstrap 95% CI
    mc_p: float | None = None  # McNemar exact, two-sided (not in the ASR Holm family)
    mc_meta: Mapping[str, Any] | None = None  # format, engine, per-skill accuracies, seconds, items/s
    # not measured (margin or mc off, an endpoint): no such keys at all, as in files written before they existed
    _omit_if_none: ClassVar[frozenset[str]] = frozenset({
        "refusal_margin", "refusal_margin_n", "margin_diff", "margin_diff_ci", "margin_p", "margin_p_holm", "margin_meta",
        "margin_retention", "margin_retention_ci", "kl_harmful", "kl_harmful_n",
        "mc_acc", "mc_acc_ci", "mc_acc_norm", "mc_acc_norm_ci", "mc_n", "mc_chance", "mc_diff", "mc_diff_ci", "mc_p",
        "mc_meta"})


@dataclass(frozen=True, kw_only=True)
class GuardRow(_Row):
    variant: str
    asr: float | None
    false_refusal: float | None
    latency_added_s: float | None


@dataclass(frozen=True, kw_only=True)
class TapTree(_Row):
    """The search tree of one TAP/PAIR run on one item, for the report's tree view."""

    variant: str
    item_id: str
    run: str
    behavior: str | None
    tree: Any
    target_queries: int | None = None


@dataclass(frozen=True, kw_only=True)
class LensSummary(_Row):
    png: Mapping[str, str]
    variants: tuple[str, ...]
    prompts: str
    limit: int


@dataclass(frozen=True, kw_only=True)
class RunProvenance(_Row):
    libraries: Mapping[str, str | None]
    started: str
    finished: str
    cache_dir: str
    generation: GenerationConfig
    timings_s: Mapping[str, float]
    datasets: tuple[tuple[str, str], ...]  # (name, sha256) of every dataset the run's records used
    code: Mapping[str, Any] | None = None  # {"commit", "dirty"} of the source that ran (None: not a git checkout)

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"code"})


@dataclass(frozen=True, kw_only=True)
class ExperimentResult(_Row):
    """``experiment.json``: everything an experiment measured (the records stay in results.jsonl)."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)  # the YAML as written
    variants: tuple[VariantSummary, ...] = ()
    asr: tuple[AsrRow, ...] = ()
    comparisons: tuple[Comparison, ...] = ()  # against declared references, Holm-adjusted with the next
    expectation_tests: tuple[Comparison, ...] = ()  # extra tests expectations need (e.g. vs runner-up)
    utility: tuple[UtilityRow, ...] = ()
    judge_agreement: tuple[JudgeAgreement, ...] = ()
    direction_flips: tuple[DirectionFlip, ...] = ()  # older runs only (a run now leaves it empty)
    judge_disagreements: tuple[JudgeDisagreement, ...] = ()  # same-semantic judges only
    judge_semantics: Mapping[str, str] | None = None  # judge (as records name it) → semantic; None: not recorded
    headline_judge: str | None = None  # the judge of the headline (the YAML's first)
    guards: tuple[GuardRow, ...] = ()
    tap_trees: tuple[TapTree, ...] = ()
    logitlens: LensSummary | None = None
    expectations: tuple[ExpectationCheck, ...] = ()
    provenance: RunProvenance | None = None

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"judge_disagreements", "judge_semantics", "headline_judge"})
    _format_key: ClassVar[str | None] = "format"
    _format: ClassVar[int] = RESULT_FORMAT

    def variant(self, name: str) -> VariantSummary:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


# ----------------------------------------------------------------------------------- summary.json
_SUMMARY_KEYS = ("attack", "judge", "model_sha256", "dataset", "dataset_sha256")
_RATE_KEYS = tuple(f.name for f in fields(Rate))
_HEADLINE_KEYS = ("n", "successes", "unscorable", "asr", "ci_low", "ci_high", "by_category", "attack", "judge")


@dataclass(frozen=True, kw_only=True)
class EvalSummary:
    """``summary.json``: per model spec, its ASR rows (the first attack × judge is the headline)."""

    models: Mapping[str, tuple[AsrRow, ...]]
    libraries: Mapping[str, str | None] = field(default_factory=dict)

    def headline(self, model: str) -> AsrRow:
        return self.models[model][0]

    def to_json(self) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for model, rows in self.models.items():
            entries = [{**r.rate.to_json(), "by_category": _plain(r.by_category),
                        **{k: getattr(r, k) for k in _SUMMARY_KEYS}} for r in rows]
            first = entries[0]
            models[model] = {"by_attack_judge": entries,
                             **{k: first[k] for k in _HEADLINE_KEYS}}
        return {"format": RESULT_FORMAT, "models": models, "libraries": dict(self.libraries)}

    @classmethod
    def from_json(cls, d: Any) -> EvalSummary:
        if not isinstance(d, Mapping) or not isinstance(d.get("models"), Mapping):
            raise DataError("summary.json: expected an object with 'models'")
        _version(d, "format", RESULT_FORMAT, "summary.json")
        models = {}
        for model, m in d["models"].items():
            rows = []
            for s in m["by_attack_judge"]:
                rate = {k: s[k] for k in _RATE_KEYS if k in s}
                rows.append(AsrRow(variant=model, recipe=model, dataset=s["dataset"], attack=s["attack"],
                                   judge=s["judge"], **rate, model_sha256=s["model_sha256"],
                                   dataset_sha256=s["dataset_sha256"],
                                   by_category={c: Rate.from_json(v) for c, v in s["by_category"].items()}))
            models[model] = tuple(rows)
        return cls(models=models, libraries=dict(d.get("libraries") or {}))
