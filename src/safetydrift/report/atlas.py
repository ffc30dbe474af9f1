"""One map from several free-lunch parts: ``map.html``, its figures and ``tables/map_cells.csv``.

Why: each part of the map is sized to run in under two hours (``configs/free-lunch-*.yaml``), so each page
shows two to five doses; where the band opens and closes, and whether an effect survives other seeds, is only
seen across parts. This page reads the parts' finished outputs (``experiment.json``, ``sweep.json``) and
draws the same figures over their union: nothing is generated, judged or re-tested.

What is and is not combined:
- Parts are combined only if they measure the same thing: the same base recipe, the same decision cell
  (dataset, attack, judge) and the same decision rules. A cell name or dose label that two parts define
  differently is an error, never a silent overwrite; the base (and any cell both parts define alike) is
  taken from the first part that has it.
- Each cell keeps the verdict, Holm p and R that its own part computed: Holm was applied over *that part's*
  comparisons (a family per part), so p-values are not re-adjusted over the union. The page says so.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from safetydrift.analysis.freelunch import CellEvidence, CellVerdict, Rules, SweepRow
from safetydrift.errors import DataError
from safetydrift.records import ExperimentResult
from safetydrift.report.figures import FigureSet
from safetydrift.report.format import MISSING
from safetydrift.report.html import environment
from safetydrift.report.sweep import (
    CSV_COLUMNS,
    PAGE_HEAD,
    _csv_row,
    _fmt_cells,
    fig_asr_dose,
    fig_frontier,
    fig_r_dose,
)
from safetydrift.report.tables import write_csv
from safetydrift.store import atomic_write_text

__all__ = ["Combined", "Part", "combine", "load_part", "render_map"]

Cell = tuple[str, str, str]


@dataclass(frozen=True)
class Part:
    """One finished part: where it is, what it swept, what it measured and how it read each cell."""

    out: Path
    name: str
    spec: Any  # experiments.sweep.SweepSpec
    result: ExperimentResult
    rows: tuple[SweepRow, ...]
    cell: Cell
    rules: Rules
    parting: str | None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing (run `safetydrift sweep` for this part first)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e.__class__.__name__})") from None


def _row(d: dict[str, Any], where: str) -> SweepRow:
    names = {f.name for f in fields(CellEvidence)}
    try:
        ev = CellEvidence(**{k: v for k, v in d.items() if k in names})
        ci = ev.r_ci
        others = {j: (v[0], v[1]) for j, v in (ev.other_judges or {}).items()} if ev.other_judges else None
        ev = replace(ev, r_ci=None if ci is None else (float(ci[0]), float(ci[1])), other_judges=others)
        return SweepRow(ev, CellVerdict(d["rule"], d["why"]))
    except (TypeError, KeyError, IndexError) as e:
        raise DataError(f"{where}: a cell is malformed ({e.__class__.__name__}: {e})") from None


def load_part(out: Path) -> Part:
    """A part's finished output directory, read back (a one-line DataError if anything is missing)."""
    from safetydrift.experiments.sweep import parse_sweep

    out = Path(out)
    sw, ex = _json(out / "sweep.json"), _json(out / "experiment.json")
    if not isinstance(sw, dict) or sw.get("format") != 1 or not isinstance(sw.get("cells"), list):
        raise DataError(f"{out / 'sweep.json'}: not a sweep.json of format 1")
    try:
        result = ExperimentResult.from_json(ex)
    except (TypeError, KeyError, ValueError) as e:
        raise DataError(f"{out / 'experiment.json'}: not an experiment result ({e})") from None
    raw = (result.config or {}).get("sweep")
    if raw is None:
        raise DataError(f"{out / 'experiment.json'}: the run has no sweep: block")
    spec = parse_sweep(raw, str(out / "experiment.json"))
    rules_raw = sw.get("rules") or {}
    try:
        rules = Rules(**rules_raw)
    except TypeError as e:
        raise DataError(f"{out / 'sweep.json'}: unknown decision rules ({e})") from None
    rows = tuple(_row(d, str(out / "sweep.json")) for d in sw["cells"])
    cell = tuple(sw.get("decision_cell") or ())
    if len(cell) != 3:
        raise DataError(f"{out / 'sweep.json'}: no decision cell")
    return Part(out, str(sw.get("name") or result.name), spec, result, rows, (cell[0], cell[1], cell[2]), rules,
                sw.get("parting_dose"))


def _union(items: Sequence[tuple[str, Any]], what: str, where: Sequence[str]) -> list[tuple[str, Any]]:
    """Keyed union in order of first appearance; the same key with another value is an error."""
    seen: dict[str, tuple[Any, str]] = {}
    for (k, v), src in zip(items, where, strict=True):
        if k in seen and seen[k][0] != v:
            raise DataError(f"{what} {k!r} means one thing in {seen[k][1]} and another in {src}: these parts "
                            "cannot share a map")
        seen.setdefault(k, (v, src))
    return [(k, v) for k, (v, _) in seen.items()]


# what every part must share besides its sweep: block and name (the rest of the YAML); `utility` may differ
# (e.g. 100 or 200 multiple-choice items), and then the frontier, which plots utility across parts, is left out
SHARED_SETTINGS = ("generation", "datasets", "attacks", "judges", "backend")


@dataclass(frozen=True)
class Combined:
    """The union of several parts, as one sweep spec and one result (for the figures), one list of rows, and
    for every cell the part whose reading it is."""

    spec: Any
    result: ExperimentResult
    rows: list[SweepRow]
    cell: Cell
    rules: Rules
    part_of: dict[str, str]  # cell name → the part it was read from
    utility_differs: tuple[str, ...]  # the parts whose `utility:` settings differ from the first's (empty: none)


def combine(parts: Sequence[Part]) -> Combined:
    """The parts as one map; a DataError (one line) when they do not measure the same thing."""
    from safetydrift.experiments.sweep import Dose

    if not parts:
        raise DataError("map: no parts given")
    outs = [p.out.resolve() for p in parts]
    if len(set(outs)) < len(outs):
        raise DataError("map: a part is given twice (its cells would count twice)")
    first = parts[0]
    for p in parts[1:]:
        for what, a, b in (("base", first.spec.base, p.spec.base), ("decision cell", first.cell, p.cell),
                           ("decision rules", first.rules, p.rules),
                           *((k, (first.result.config or {}).get(k), (p.result.config or {}).get(k))
                             for k in SHARED_SETTINGS)):
            if a != b:
                raise DataError(f"map: {p.out} has another {what} than {first.out} ({b} vs {a}): parts of one map "
                                "measure the same thing")
    doses = _union([(d.label, (d.value, d.stages)) for p in parts for d in p.spec.doses], "dose",
                   [str(p.out) for p in parts for _ in p.spec.doses])
    comps = _union([c for p in parts for c in p.spec.compress], "compression",
                   [str(p.out) for p in parts for _ in p.spec.compress])
    seeds = sorted({s for p in parts for s in p.spec.seeds})
    spec = replace(first.spec, doses=tuple(sorted((Dose(k, v[0], v[1]) for k, v in doses),
                                                  key=lambda d: (d.value, d.label))),
                   compress=tuple(comps), seeds=tuple(seeds))
    _union([(v.name, v.recipe) for p in parts for v in p.result.variants], "cell",
           [str(p.out) for p in parts for _ in p.result.variants])
    owner: dict[str, int] = {}  # cell name → index of the first part that has it (its reading is used)
    for i, p in enumerate(parts):
        for v in p.result.variants:
            owner.setdefault(v.name, i)

    def mine(i: int, name: str) -> bool:
        return owner.get(name) == i

    result = ExperimentResult(
        name="free-lunch map (" + ", ".join(p.name for p in parts) + ")",
        variants=tuple(v for i, p in enumerate(parts) for v in p.result.variants if mine(i, v.name)),
        asr=tuple(a for i, p in enumerate(parts) for a in p.result.asr if mine(i, a.variant)),
        utility=tuple(u for i, p in enumerate(parts) for u in p.result.utility if mine(i, u.variant)))
    rows = [r for i, p in enumerate(parts) for r in p.rows if mine(i, r.evidence.name)]
    util0 = (first.result.config or {}).get("utility")
    differs = tuple(p.name for p in parts[1:] if (p.result.config or {}).get("utility") != util0)
    return Combined(spec, result, rows, first.cell, first.rules, {n: parts[i].name for n, i in owner.items()},
                    differs)


PAGE = PAGE_HEAD + """<p>Decision judge <b>{{ judge }}</b> on {{ dataset }} · {{ attack }}; base <code>{{ base }}</code>. This page
reads the parts' finished outputs and re-tests nothing: each cell keeps the verdict, R and Holm p of its own
part, and <b>Holm was applied within each part</b> (one family per part), not over this union. Where two parts
have the same cell (the aligned base), the first part's reading is used.
{% if utility_differs %}<b>The utility settings differ</b> between parts ({{ utility_differs }} against the
first): each cell's utility loss is against its own fine-tune, but the safety–utility frontier, which puts
utility from every part on one axis, is left out.{% endif %}</p>
<h2>Parts</h2><table><tr><th class="l">part</th><th class="l">output</th><th>cells</th><th>doses</th>
<th>seeds</th><th class="l">lines part at</th></tr>
{% for p in parts %}<tr><td class="l">{{ p.name }}</td><td class="l"><code>{{ p.out }}</code></td><td>{{ p.cells }}</td>
<td class="l">{{ p.doses }}</td><td>{{ p.seeds }}</td><td class="l">{{ p.parting }}</td></tr>{% endfor %}</table>
<h2>Decision rules (checked in this order)</h2><ol>
{% for name, text in rules %}<li><b>{{ name }}</b>: {{ text }}</li>{% endfor %}</ol>
<h2>Verdicts by dose and compression</h2><table><tr><th class="l">compression</th>
{% for d in doses %}<th>{{ d }}</th>{% endfor %}</tr>
{% for comp, row in summary %}<tr><td class="l">{{ comp }}</td>{% for v in row %}<td class="l">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Figures</h2>{% for f in figures %}<figure><img alt="{{ f.title }}" src="{{ f.uri }}">
<figcaption><b>{{ f.title }}.</b> {{ f.caption }} ({{ f.file }})</figcaption></figure>{% endfor %}
<h2>Cells</h2><table><tr><th class="l">part</th>{% for h in head %}<th{% if loop.index <= 3 or loop.index > head|length - 2 %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in cells %}<tr class="{{ r.css }}"><td class="l">{{ r.part }}</td>{% for v in r.cols %}<td{% if loop.index <= 3 or loop.index > r.cols|length - 2 %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></body></html>
"""


def _summary(spec: Any, rows: Sequence[SweepRow]) -> list[tuple[str, list[str]]]:
    """Per compression and dose, how many seeds meet each rule (the seeds listed)."""
    got: dict[tuple[str, str], list[tuple[int | None, str]]] = defaultdict(list)
    for r in rows:
        got[(r.evidence.compress, r.evidence.dose)].append((r.evidence.seed, r.verdict.rule))
    out = []
    for label, _ in spec.compress:
        cells = []
        for d in spec.doses:
            seen = sorted(got.get((label, d.label), []), key=lambda x: (x[0] is None, x[0]))
            by_rule: dict[str, list[str]] = defaultdict(list)
            for seed, rule in seen:
                by_rule[rule].append(f"s{seed}")
            cells.append("; ".join(f"{rule} ({', '.join(s)})" for rule, s in by_rule.items()) or MISSING)
        out.append((label, cells))
    return out


def render_map(parts: Sequence[Part], out_dir: Path) -> Path:
    """Write out_dir/map.html, figures/sweep_*.png and tables/map_cells.csv; returns the page's path. The
    output directory may not be one of the parts' (their own figures have the same names)."""
    m = combine(parts)
    out_dir = Path(out_dir)
    if out_dir.resolve() in {p.out.resolve() for p in parts}:
        raise DataError(f"map: --out {out_dir} is a part's own directory: write the map elsewhere")
    out_dir.mkdir(parents=True, exist_ok=True)
    F = FigureSet(out_dir)
    fig_asr_dose(m.spec, m.result, m.cell, F)
    fig_r_dose(m.spec, m.rows, F)
    if not m.utility_differs:  # utility read on other items or settings is not one axis
        fig_frontier(m.spec, m.result, m.cell, F)
    write_csv(out_dir / "tables" / "map_cells.csv", ("part", *CSV_COLUMNS),
              [{"part": m.part_of[r.evidence.name], **_csv_row(r)} for r in m.rows])
    head, cells = _fmt_cells(m.rows)
    for r, c in zip(m.rows, cells, strict=True):
        c["part"] = m.part_of[r.evidence.name]
    info = [{"name": p.name, "out": str(p.out), "cells": len(p.rows), "doses": ", ".join(d.label for d in p.spec.doses),
             "seeds": ", ".join(str(s) for s in p.spec.seeds), "parting": p.parting or MISSING} for p in parts]
    html = environment().from_string(PAGE).render(
        title="The free-lunch map", judge=m.cell[2], dataset=m.cell[0], attack=m.cell[1], base=m.spec.base,
        parts=info, rules=m.rules.text(), doses=[d.label for d in m.spec.doses], summary=_summary(m.spec, m.rows),
        figures=F.of("sweep"), head=head, cells=cells, utility_differs=", ".join(m.utility_differs),
        nonce=secrets.token_urlsafe(8))
    page = out_dir / "map.html"
    atomic_write_text(page, html)
    return page
