"""Experiment report CSV exports under ``tables/``: the numbers behind the page, unformatted.

``TABLES`` is the registry: one entry per file, with its columns and its row builder; a table with no rows
is not written. Cells hold the raw values (a float as ``repr``, a list joined with ``;``, a dict as sorted
JSON, None/NaN/inf as empty), so a spreadsheet or pandas gets full precision.

A CSV row is a plain ``{column: value}`` dict with every column of its table: computed from the typed rows
by attribute, or, where a table's columns are a row type's own fields, that row's JSON form (``to_json``,
the same as in ``experiment.json``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetydrift.records import Rate, UtilityRow
from safetydrift.report.data import ExperimentView
from safetydrift.report.format import csv_safe, finite, human_bytes, json_safe
from safetydrift.report.sections import finite_pair
from safetydrift.store import atomic_write_text

__all__ = ["TABLES", "Table", "write_csv", "write_tables"]

# the refusal margin (analysis/margin.py) and its paired change against the reference; p Holm is within margins
MARGIN_COLS = ["refusal_margin", "refusal_margin_n", "margin_diff", "margin_diff_ci_low", "margin_diff_ci_high",
               "margin_p", "margin_p_holm", "kl_harmful", "kl_harmful_n"]
MARGIN_META_COLS = ["margin_meta"]  # utility.csv only: engine, test, pairs, prompts at the floor (JSON)
# log-likelihood multiple choice (analysis/mc.py); mc_meta (utility.csv only): format, engine, per skill, items/s
MC_COLS = ["mc_acc", "mc_acc_ci_low", "mc_acc_ci_high", "mc_acc_norm", "mc_acc_norm_ci_low", "mc_acc_norm_ci_high",
           "mc_n", "mc_chance", "mc_diff", "mc_diff_ci_low", "mc_diff_ci_high", "mc_p"]
MC_META_COLS = ["mc_meta"]
HEADLINE_COLS = [
    "variant", "recipe", "reference", "dataset", "attack", "judge", "n", "asr", "ci_low", "ci_high", "diff",
    "diff_ci_low", "diff_ci_high", "p_exact", "p_holm", "rrr", "rrr_ci_low", "rrr_ci_high", "benign_task_acc",
    "mc_acc", "mc_acc_norm", "over_refusal", "ppl", "kl_to_reference", *MARGIN_COLS, "size_bytes", "size", "bits_per_weight",
]
ASR_COLS = [
    "variant", "recipe", "dataset", "attack", "judge", "n", "successes", "unscorable", "asr", "ci_low", "ci_high",
    "runs_per_run", "runs_mean", "runs_sd", "runs_min", "runs_max", "runs_ci_low", "runs_ci_high",
]
COMP_COLS = [
    "variant", "reference", "kind", "dataset", "attack", "judge", "n_pairs", "n_items", "test", "asr_ref",
    "asr_variant", "diff", "diff_ci_low", "diff_ci_high", "p_exact", "p_midp", "p_holm", "rrr", "rrr_ci_low",
    "rrr_ci_high",
]
UTIL_COLS = ["variant", "benign_task_acc", "benign_task_n", *MC_COLS, "over_refusal", "over_refusal_n", "ppl",
             "kl_to_reference", *MARGIN_COLS, *MARGIN_META_COLS, *MC_META_COLS]
CAT_COLS = [
    "variant", "dataset", "attack", "judge", "category", "n", "successes", "unscorable", "asr", "ci_low", "ci_high",
    "reference", "asr_reference", "diff",
]
AGREE_COLS = ["judge_a", "judge_b", "n", "agreement", "kappa", "semantic_a", "semantic_b"]
EXPECT_COLS = ["variant", "reference", "expected", "claim", "source", "dataset", "attack", "judge", "alpha",
               "asr_reference", "asr_variant", "diff", "p_holm", "verdict", "why", "task_acc_reference", "task_acc",
               "utility_loss", "utility_verdict", "over_refusal_reference", "over_refusal", "kl_to_reference"]
GUARD_COLS = ["variant", "reference", "asr", "asr_reference", "false_refusal", "latency_added_s"]
VARIANT_COLS = [
    "name", "recipe", "reference", "kind", "family", "weights_sha256", "size_bytes", "bits_per_weight",
    "build_seconds", "manifest",
]
FLIP_COLS = ["variant", "reference", "dataset", "attack", "diffs"]
DISAGREE_COLS = ["variant", "reference", "dataset", "attack", "semantic", "judge_a", "judge_b", "diff_a", "diff_b",
                 "p_a", "p_b", "kind"]
RUNS_COLS = ["variant", "eval", "n_runs", "per_run", "mean", "sd", "min", "max", "ci", "pooled"]

CsvRow = Mapping[str, Any]
"""One line of a CSV file: a value for every column of its table."""


# ---------------------------------------------------------------------------------------------- writing


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return csv_safe(";".join("" if x is None else str(x) for x in v))
    if isinstance(v, Mapping):
        return json.dumps(json_safe(v), ensure_ascii=False, sort_keys=True)
    return csv_safe(v) if isinstance(v, str) else v


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[CsvRow]) -> None:
    """``rows`` must have every column (a KeyError names a row builder that forgot one)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_cell(r[c]) for c in columns])
    atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------- rows


def _rate_cells(r: Rate) -> dict[str, Any]:
    return {"n": r.n, "successes": r.successes, "unscorable": r.unscorable, "asr": r.asr, "ci_low": r.ci_low,
            "ci_high": r.ci_high}


def _margin_cells(u: UtilityRow | None) -> dict[str, Any]:
    """The margin columns of a variant's utility row (all empty where no margin was measured)."""
    if u is None or u.refusal_margin is None:
        return dict.fromkeys(MARGIN_COLS + MARGIN_META_COLS)
    lo, hi = finite_pair(u.margin_diff_ci)
    return {"refusal_margin": u.refusal_margin, "refusal_margin_n": u.refusal_margin_n, "margin_diff": u.margin_diff,
            "margin_diff_ci_low": lo, "margin_diff_ci_high": hi, "margin_p": u.margin_p,
            "margin_p_holm": u.margin_p_holm, "kl_harmful": u.kl_harmful, "kl_harmful_n": u.kl_harmful_n,
            "margin_meta": u.margin_meta}


def _mc_cells(u: UtilityRow | None) -> dict[str, Any]:
    """The multiple-choice columns of a variant's utility row (all empty where it was not measured)."""
    if u is None or u.mc_acc is None:
        return dict.fromkeys(MC_COLS + MC_META_COLS)
    (alo, ahi), (nlo, nhi), (dlo, dhi) = (finite_pair(u.mc_acc_ci), finite_pair(u.mc_acc_norm_ci),
                                          finite_pair(u.mc_diff_ci))
    return {"mc_acc": u.mc_acc, "mc_acc_ci_low": alo, "mc_acc_ci_high": ahi, "mc_acc_norm": u.mc_acc_norm,
            "mc_acc_norm_ci_low": nlo, "mc_acc_norm_ci_high": nhi, "mc_n": u.mc_n, "mc_chance": u.mc_chance,
            "mc_diff": u.mc_diff, "mc_diff_ci_low": dlo, "mc_diff_ci_high": dhi, "mc_p": u.mc_p, "mc_meta": u.mc_meta}


def utility_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    return [{**u.to_json(), **_margin_cells(u), **_mc_cells(u)} for u in E.utility]


def headline_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    """One row per variant and evaluation (a variant without ASR rows still gets one, evaluation cells empty)."""
    out: list[CsvRow] = []
    for name in E.names:
        v, u = E.variant(name), E.utility_of(name)
        size = v.size_bytes if v else None
        base = {
            **dict.fromkeys(HEADLINE_COLS), "variant": name, "recipe": v.recipe if v else None,
            "reference": E.ref(name), "benign_task_acc": u.benign_task_acc if u else None,
            "mc_acc": u.mc_acc if u else None, "mc_acc_norm": u.mc_acc_norm if u else None,
            "over_refusal": u.over_refusal if u else None, "ppl": u.ppl if u else None,
            "kl_to_reference": u.kl_to_reference if u else None, "size_bytes": size,
            **{k: v for k, v in _margin_cells(u).items() if k in HEADLINE_COLS},
            "size": None if size is None else human_bytes(size), "bits_per_weight": v.bits_per_weight if v else None,
        }
        evals = E.asr_rows_of(name)
        for a in evals:
            c = E.comparison_at(name, *a.cell)
            dlo, dhi = finite_pair(c.diff_ci) if c else (None, None)
            rlo, rhi = finite_pair(c.rrr_ci) if c else (None, None)
            out.append({
                **base, "dataset": a.dataset, "attack": a.attack, "judge": a.judge, "n": a.n, "asr": a.asr,
                "ci_low": a.ci_low, "ci_high": a.ci_high, "diff": c.diff if c else None, "diff_ci_low": dlo,
                "diff_ci_high": dhi, "p_exact": c.p_exact if c else None, "p_holm": c.p_holm if c else None,
                "rrr": c.rrr if c else None, "rrr_ci_low": rlo, "rrr_ci_high": rhi,
            })
        if not evals:
            out.append(base)
    return out


def asr_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    out: list[CsvRow] = []
    for a in E.asr:
        r = a.runs
        out.append({
            "variant": a.variant, "recipe": a.recipe, "dataset": a.dataset, "attack": a.attack, "judge": a.judge,
            "n": a.n, "successes": a.successes, "unscorable": a.unscorable, "asr": a.asr, "ci_low": a.ci_low,
            "ci_high": a.ci_high, "runs_per_run": r.per_run if r else None, "runs_mean": r.mean if r else None,
            "runs_sd": r.sd if r else None, "runs_min": r.min if r else None, "runs_max": r.max if r else None,
            "runs_ci_low": r.ci_low if r else None, "runs_ci_high": r.ci_high if r else None,
        })
    return out


def comparison_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    """The reference comparisons, then the extra tests expectations asked for (``kind`` says which)."""
    out: list[CsvRow] = []
    for c in [*E.comparisons, *E.expectation_tests]:
        dlo, dhi = finite_pair(c.diff_ci)
        rlo, rhi = finite_pair(c.rrr_ci)
        out.append({**c.to_json(), "diff_ci_low": dlo, "diff_ci_high": dhi, "rrr_ci_low": rlo, "rrr_ci_high": rhi})
    return out


def category_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    """ASR per harm category, with the reference's rate in the same category and the difference."""
    out: list[CsvRow] = []
    for a in E.asr:
        ref = E.ref(a.variant)
        r = E.asr_at(ref, *a.cell) if ref else None
        rc = r.by_category if r else {}
        for cat, c in sorted(a.by_category.items()):
            x, y = finite(c.asr), finite(rc[cat].asr) if cat in rc else None
            out.append({
                "variant": a.variant, "dataset": a.dataset, "attack": a.attack, "judge": a.judge, "category": cat,
                **_rate_cells(c), "reference": ref if r else None, "asr_reference": y,
                "diff": None if x is None or y is None else x - y,
            })
    return out


def guard_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    out: list[CsvRow] = []
    for g in E.guards:
        ref = E.ref(g.variant)
        out.append({"variant": g.variant, "reference": ref, "asr": g.asr, "asr_reference": E.primary_asr(ref),
                    "false_refusal": g.false_refusal, "latency_added_s": g.latency_added_s})
    return out


def variant_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    return [{**v.to_json(), "manifest": v.manifest or None} for v in E.variants]


def agreement_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    """Each pair's agreement with both judges' semantics (empty where not recorded or not declared)."""
    return [{**r.to_json(), "semantic_a": E.semantics.get(r.judge_a), "semantic_b": E.semantics.get(r.judge_b)}
            for r in E.agreement]


def disagreement_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    """Comparisons two judges of one semantic read differently (``p_a``/``p_b`` are Holm-adjusted)."""
    return [{**d.to_json(), "semantic": E.semantics.get(d.judge_a)} for d in E.disagreements]


def flip_rows(E: ExperimentView, runs: list[dict[str, Any]]) -> list[CsvRow]:
    return [{"variant": f.variant, "reference": f.reference, "dataset": f.dataset, "attack": f.attack,
             "diffs": f.diffs} for f in E.flips]


# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Table:
    """One CSV file: ``rows(view, runs)`` gives its rows (``runs``: the page's repeated-attack rows)."""

    name: str
    columns: list[str]
    rows: Callable[[ExperimentView, list[dict[str, Any]]], Sequence[CsvRow]]


TABLES: tuple[Table, ...] = (
    Table("headline", HEADLINE_COLS, headline_rows),
    Table("asr", ASR_COLS, asr_rows),
    Table("comparisons", COMP_COLS, comparison_rows),
    Table("utility", UTIL_COLS, utility_rows),
    Table("by_category", CAT_COLS, category_rows),
    Table("judge_agreement", AGREE_COLS, agreement_rows),
    Table("judge_disagreements", DISAGREE_COLS, disagreement_rows),
    Table("guards", GUARD_COLS, guard_rows),
    Table("runs", RUNS_COLS, lambda E, runs: runs),
    Table("variants", VARIANT_COLS, variant_rows),
    Table("direction_flips", FLIP_COLS, flip_rows),
    Table("expectations", EXPECT_COLS, lambda E, runs: [x.to_json() for x in E.expectations]),
)


def write_tables(E: ExperimentView, runs: list[dict[str, Any]], tables_dir: Path) -> None:
    """Write every table that has rows to ``tables_dir/<name>.csv``."""
    for t in TABLES:
        rows = t.rows(E, runs)
        if rows:
            write_csv(tables_dir / f"{t.name}.csv", t.columns, rows)
