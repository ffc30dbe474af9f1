"""ASR per cell: judged records grouped by (model, dataset, attack, judge), each group an :class:`AsrRow`.

The one grouping of the package: ``eval``'s summary.json and an experiment's ASR table are both built
here, so the two can never count the same records differently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from safetydrift.records import AsrRow, Rate, Record, RunsSummary
from safetydrift.stats.core import asr_summary, runs_summary

Cell = tuple[str, str, str, str]  # (model recipe, dataset, attack, judge) as the records name them


def run_order(unit: str) -> tuple[int, int | str]:
    """``run=2`` before ``run=10``."""
    n = unit.partition("=")[2]
    return (0, int(n)) if n.isdigit() else (1, n)


def _runs(recs: list[Record]) -> RunsSummary | None:
    """Per-run ASR where an attack has several runs per item (``run=0``, ``run=1``, ...)."""
    per_run: dict[str, list[str]] = defaultdict(list)
    for r in recs:
        if r.unit.startswith("run="):
            per_run[r.unit].append(r.verdict)
    if len(per_run) <= 1:
        return None
    rates = []
    for key in sorted(per_run, key=run_order):
        scored = [v for v in per_run[key] if v != "unscorable"]
        if scored:
            rates.append(sum(v == "success" for v in scored) / len(scored))
    return RunsSummary(per_run=tuple(rates), **runs_summary(rates)) if rates else None


def asr_rows(records: Iterable[Record], names: Mapping[str, str] | None = None) -> list[AsrRow]:
    """One row per (model, dataset, attack, judge), in the order the records first show each cell.

    ``names`` maps a recipe to its variant name: records of other models are left out. Without it every
    model is counted and named by its own spec (``eval``). The interval is clustered by item, so several
    units per item (TAP runs, templates) do not overstate the evidence.
    """
    groups: dict[Cell, list[Record]] = defaultdict(list)
    for r in records:
        if names is None or r.model in names:
            groups[(r.model, r.dataset, r.attack, r.judge)].append(r)
    rows = []
    for (model, dataset, attack, judge), recs in groups.items():
        s = asr_summary([r.verdict for r in recs], [r.category or "uncategorized" for r in recs],
                        clusters=[r.item_id for r in recs])
        by_category = {cat: Rate(**rate) for cat, rate in s.pop("by_category").items()}
        rows.append(AsrRow(variant=model if names is None else names[model], recipe=model, dataset=dataset,
                           attack=attack, judge=judge, **s, by_category=by_category, runs=_runs(recs),
                           model_sha256=recs[0].model_sha256, dataset_sha256=recs[0].dataset_sha256))
    return rows
