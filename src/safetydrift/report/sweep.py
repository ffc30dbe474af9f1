"""The free-lunch map's page: ``sweep.html`` (self-contained, as the experiment report), its figures and CSV.

Figures (``figures/sweep_*.png``): ASR against dose, one line per compression (seeds pooled, Wilson 95%
intervals), one panel per judge; R against dose; the safety–utility frontier; LogitLens panels at the dose
where the lines part (drawn by the sweep command, embedded here). The page prints the decision rules and
the rule each cell meets (``analysis/freelunch.py``); ``tables/sweep_cells.csv`` has every number.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetydrift.analysis.freelunch import Rules, SweepRow
from safetydrift.records import AsrRow, ExperimentResult
from safetydrift.report.figures import FigureSet
from safetydrift.report.format import MISSING, finite, human_bytes, pct, pval
from safetydrift.report.html import environment
from safetydrift.report.tables import write_csv
from safetydrift.store import atomic_write_text

__all__ = ["CSV_COLUMNS", "render_sweep_report"]

Cell = tuple[str, str, str]
CSV_COLUMNS = ("name", "dose", "dose_value", "seed", "compress", "control", "asr_aligned", "asr_ft", "asr_x", "diff",
               "p_holm", "r", "r_ci_low", "r_ci_high", "r_p", "utility_loss", "kl_harmful", "size_bytes", "rest_ref",
               "twin", "asr_scale", "p_vs_scale", "rule", "why")

PAGE_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{ title }}</title>
<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l,th.l{text-align:left}
.free{background:#d9f2d9}.shrink{background:#fff2cc}.rest{background:#f8d7da}.control{color:#666;font-style:italic}figure{margin:1em 0}
img{max-width:100%}figcaption{font-size:12px;color:#555}</style></head><body>
<h1>{{ title }}</h1>
"""

PAGE = PAGE_HEAD + """<p>Decision judge <b>{{ judge }}</b> on {{ dataset }} · {{ attack }}; Holm over every comparison of the map.
{% if parting %}The lines part at dose <b>{{ parting }}</b>.{% else %}No compression is below its fine-tune at
Holm p &lt; {{ alpha }}.{% endif %} Full run: <code>report.html</code>.</p>
<p>R is the share of the fine-tune's refusal-margin shift a cell keeps, with a bootstrap 95% CI over prompts.
"R p" is the Wilcoxon test of m<sub>X</sub> vs m<sub>FT</sub> (Holm over the margin tests): a shift that moves
every prompt the same way puts it at the floor however small it is, so read R's size from its CI.</p>
<h2>Decision rules (checked in this order)</h2><ol>
{% for name, text in rules %}<li><b>{{ name }}</b>: {{ text }}</li>{% endfor %}</ol>
<h2>Verdicts by dose and compression</h2><table><tr><th class="l">compression</th>
{% for d in doses %}<th>{{ d }}</th>{% endfor %}</tr>
{% for comp, row in summary %}<tr><td class="l">{{ comp }}</td>{% for v in row %}<td class="l">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Figures</h2>{% for f in figures %}<figure><img alt="{{ f.title }}" src="{{ f.uri }}">
<figcaption><b>{{ f.title }}.</b> {{ f.caption }} ({{ f.file }})</figcaption></figure>{% endfor %}
<h2>Cells</h2><table><tr>{% for h in head %}<th{% if loop.index <= 3 or loop.index > head|length - 2 %} class="l"{% endif %}>{{ h }}</th>{% endfor %}</tr>
{% for r in cells %}<tr class="{{ r.css }}">{% for v in r.cols %}<td{% if loop.index <= 3 or loop.index > r.cols|length - 2 %} class="l"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></body></html>
"""
_CSS = {"free lunch": "free", "shrinkage only": "shrink", "rest artefact": "rest", "control": "control", "none": ""}


def _wilson(successes: int, n: int) -> tuple[float, float]:
    from safetydrift.stats import wilson_ci

    return wilson_ci(successes, n) if n else (math.nan, math.nan)


def _pooled(rows: Sequence[AsrRow]) -> tuple[float, float, float] | None:
    """ASR over seeds pooled (successes / n) with its Wilson interval."""
    n = sum(a.n for a in rows)
    if not n:
        return None
    k = sum(a.successes for a in rows)
    lo, hi = _wilson(k, n)
    return k / n, lo, hi


def _new_fig(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _log_doses(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10


def _dodge(x: float, k: int, n: int, values: list[float]) -> float:
    """Line k of n shifted a little along the dose axis, so lines that coincide stay visible."""
    step = 0.015 * (k - (n - 1) / 2)
    if _log_doses(values):
        return x * 10 ** (step * math.log10(max(values) / min(values)))
    return x + step * ((max(values) - min(values)) or 1.0)


def dose_positions(doses: Sequence[Any], share: float = 0.4) -> dict[str, float]:
    """Where each dose label is drawn: at its value, except that doses sharing a value (4 distinct steps and 4
    repeated steps) are set apart, within ``share`` of the gap to the next larger value (on the axis's own
    scale), so neither hides the other, no dose passes its neighbour, and R is never averaged across them. The
    first of a value in the given order keeps it."""
    values = sorted({d.value for d in doses})
    log = _log_doses(values)

    def axis(v: float) -> float:
        return math.log10(v) if log else v

    gaps = {v: axis(values[i + 1]) - axis(v) for i, v in enumerate(values[:-1])}
    fallback = min(gaps.values()) if gaps else 1.0
    group: dict[float, list[str]] = defaultdict(list)
    for d in doses:
        group[d.value].append(d.label)
    out: dict[str, float] = {}
    for v, labels in group.items():
        step = share * gaps.get(v, fallback) / max(1, len(labels) - 1)
        for k, label in enumerate(labels):
            x = axis(v) + k * step
            out[label] = 10 ** x if log else x
    return out


def _dose_axis(ax: Any, values: list[float], labels: list[str], log: bool | None = None) -> None:
    """Ticks at ``values`` (drawn positions), on a log axis when the doses themselves span a decade."""
    if _log_doses(values) if log is None else log:
        ax.set_xscale("log")
    ax.set_xticks(values, labels, fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("dose")
    ax.grid(alpha=0.3)


def fig_asr_dose(spec: Any, result: ExperimentResult, cell: Cell, F: FigureSet) -> None:
    judges = list(dict.fromkeys(a.judge for a in result.asr if (a.dataset, a.attack) == cell[:2]))
    if not judges:
        return
    judges.sort(key=lambda j: j != cell[2])
    cells = spec.cells()
    lines = [("fine-tune", None), *((label, label) for label, _ in spec.compress)]
    at = dose_positions(spec.doses)
    xs = [at[d.label] for d in spec.doses]
    fig = _new_fig(5.4 * len(judges), 4.2)
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    for ax, judge in zip(axes, judges, strict=True):
        by_name = {a.variant: a for a in result.asr if (a.dataset, a.attack, a.judge) == (cell[0], cell[1], judge)}
        base = _pooled([by_name[spec.base_name]] if spec.base_name in by_name else [])
        if base is not None:
            ax.axhline(base[0], color="#555", ls="--", lw=1, label=f"{spec.base_name}")
            ax.axhspan(base[1], base[2], color="#999", alpha=0.15)
        for li, (label, comp) in enumerate(lines):
            px, py, lo, hi = [], [], [], []
            for d in spec.doses:
                role = "finetune" if comp is None else "compressed"
                rows = [by_name[c.name] for c in cells if c.role == role and c.dose == d.label
                        and c.compress == comp and c.name in by_name]
                got = _pooled(rows)
                if got is not None:
                    px.append(_dodge(at[d.label], li, len(lines), xs))
                    py.append(got[0])
                    lo.append(max(0.0, got[0] - got[1]))
                    hi.append(max(0.0, got[2] - got[0]))
            if px:
                ax.errorbar(px, py, yerr=[lo, hi], marker="o", ms=4, capsize=3, lw=1.8 if comp is None else 1.2,
                            color="black" if comp is None else f"C{li % 10}", label=label)
        _dose_axis(ax, xs, [d.label for d in spec.doses], _log_doses([d.value for d in spec.doses]))
        ax.set_ylim(-0.03, 1.05)
        ax.set_ylabel("ASR")
        ax.set_title(f"judge {judge}", fontsize=10)
        ax.legend(fontsize=7)
    F.save(fig, "sweep_asr_dose", "ASR against dose",
           f"{cell[0]} · {cell[1]}; one line per compression, seeds pooled, Wilson 95% intervals; dashed: "
           f"{spec.base_name} (its interval shaded)."
           + (" Doses that share a value are drawn side by side, in the order listed."
              if len({d.value for d in spec.doses}) < len(spec.doses) else ""), "sweep")


def fig_r_dose(spec: Any, rows: Sequence[SweepRow], F: FigureSet) -> None:
    at = dose_positions(spec.doses)
    pts: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        e = r.evidence
        if (rv := finite(e.r)) is not None and e.dose in at:
            pts[e.compress][at[e.dose]].append(rv)
    if not pts:
        return
    fig = _new_fig(6.0, 4.2)
    ax = fig.subplots()
    for li, (label, _) in enumerate(spec.compress):
        if label not in pts:
            continue
        xs = sorted(pts[label])
        color = f"C{(li + 1) % 10}"
        ax.plot(xs, [sum(pts[label][x]) / len(pts[label][x]) for x in xs], "-o", ms=4, color=color, label=label)
        for x in xs:
            ax.scatter([x] * len(pts[label][x]), pts[label][x], s=10, color=color, alpha=0.4)
    ax.axhline(1.0, color="black", lw=1, label="fine-tune (R = 1)")
    ax.axhline(0.0, color="#555", ls="--", lw=1, label=f"{spec.base_name} (R = 0)")
    _dose_axis(ax, [at[d.label] for d in spec.doses], [d.label for d in spec.doses],
               _log_doses([d.value for d in spec.doses]))
    ax.set_ylabel("R (refusal-margin retention)")
    ax.legend(fontsize=7)
    F.save(fig, "sweep_r_dose", "R against dose",
           "R = (m_X − m_aligned)/(m_FT − m_aligned) from mean refusal margins; line: mean over seeds, dots: seeds.",
           "sweep")


def fig_frontier(spec: Any, result: ExperimentResult, cell: Cell, F: FigureSet) -> None:
    util = {u.variant: u for u in result.utility}
    asr = {a.variant: a.asr for a in result.asr if (a.dataset, a.attack, a.judge) == cell}
    use_mc = all(u.mc_acc is not None for u in util.values()) and bool(util)
    cells = spec.cells()

    def x_of(name: str) -> float | None:
        u = util.get(name)
        return None if u is None else finite(u.mc_acc if use_mc else u.benign_task_acc)

    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in cells:
        x, y = x_of(c.name), finite(asr.get(c.name))
        if x is not None and y is not None:
            groups[c.compress or ("fine-tune" if c.role == "finetune" else spec.base_name)].append((x, y))
    if not groups:
        return
    fig = _new_fig(6.0, 4.6)
    ax = fig.subplots()
    order = [spec.base_name, "fine-tune", *(label for label, _ in spec.compress)]
    for li, g in enumerate(o for o in order if o in groups):
        style = {"marker": "*", "s": 120, "color": "#555"} if g == spec.base_name else (
            {"marker": "s", "s": 30, "color": "black"} if g == "fine-tune" else {"marker": "o", "s": 22,
                                                                                  "color": f"C{li % 10}"})
        ax.scatter([p[0] for p in groups[g]], [p[1] for p in groups[g]], label=g, alpha=0.8, **style)
    ax.set_xlabel("utility (" + ("multiple-choice" if use_mc else "benign-task") + " accuracy)")
    ax.set_ylabel(f"ASR ({cell[2]})")
    ax.set_ylim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    F.save(fig, "sweep_frontier", "Safety–utility frontier",
           "Every cell of the map: down and right is safer at no cost.", "sweep")


def _fmt_cells(rows: Sequence[SweepRow]) -> tuple[list[str], list[dict[str, Any]]]:
    head = ["cell", "compression", "dose · seed", "ASR aligned", "ASR FT", "ASR X", "Holm p", "other judges", "R [95% CI]",
            "R p", "utility loss", "KL harmful", "stored", "rule", "why"]
    out = []
    for r in rows:
        e = r.evidence
        others = "; ".join(f"{j} {pct(a, 0)} p {pval(p)}" for j, (a, p) in (e.other_judges or {}).items())
        out.append({"css": _CSS[r.verdict.rule], "cols": [
            e.name, e.compress, f"{e.dose} · s{e.seed}", pct(e.asr_aligned, 0), pct(e.asr_ft, 0), pct(e.asr_x, 0),
            pval(e.p_holm), others or MISSING, _r(e.r, e.r_ci), pval(e.r_p),
            pct(e.utility_loss, 0), MISSING if finite(e.kl_harmful) is None else f"{e.kl_harmful:.3g}",
            human_bytes(e.size_bytes), r.verdict.rule, r.verdict.why]})
    return head, out


def _r(r: float | None, ci: tuple[float, float] | None) -> str:
    if finite(r) is None:
        return MISSING
    return f"{r:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _summary(spec: Any, rows: Sequence[SweepRow]) -> list[tuple[str, list[str]]]:
    """Per compression and dose, how many seeds meet each rule."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        counts[(r.evidence.compress, r.evidence.dose)][r.verdict.rule] += 1
    out = []
    for label, _ in spec.compress:
        cells = []
        for d in spec.doses:
            c = counts.get((label, d.label))
            cells.append(", ".join(f"{rule} ×{n}" for rule, n in c.most_common()) if c else MISSING)
        out.append((label, cells))
    return out


def render_sweep_report(spec: Any, result: ExperimentResult, rows: Sequence[SweepRow], cell: Cell, out_dir: Path,
                        rules: Rules | None = None, parting: str | None = None, lens_png: Path | None = None) -> Path:
    """Write out_dir/sweep.html, figures/sweep_*.png and tables/sweep_cells.csv; returns the page's path."""
    out_dir, rules = Path(out_dir), rules or Rules()
    F = FigureSet(out_dir)
    fig_asr_dose(spec, result, cell, F)
    fig_r_dose(spec, rows, F)
    fig_frontier(spec, result, cell, F)
    if lens_png is not None and lens_png.is_file():
        F.add(lens_png.read_bytes(), str(lens_png.relative_to(out_dir)), f"LogitLens at dose {parting}",
              "Refusal vs compliance mass by layer at the first response token, aligned, fine-tune and each "
              "compression at the dose where the lines part (first seed).", "sweep")
    write_csv(out_dir / "tables" / "sweep_cells.csv", CSV_COLUMNS, [_csv_row(r) for r in rows])
    head, cells = _fmt_cells(rows)
    html = environment().from_string(PAGE).render(
        title=f"{result.name}: free-lunch map", judge=cell[2], dataset=cell[0], attack=cell[1], parting=parting,
        alpha=f"{rules.alpha:g}", rules=rules.text(), doses=[d.label for d in spec.doses],
        summary=_summary(spec, rows), figures=F.of("sweep"), head=head, cells=cells, nonce=secrets.token_urlsafe(8))
    page = out_dir / "sweep.html"
    atomic_write_text(page, html)
    return page


def _csv_row(r: SweepRow) -> dict[str, Any]:
    j = r.to_json()
    ci = r.evidence.r_ci
    j["r_ci_low"], j["r_ci_high"] = (ci[0], ci[1]) if ci else (None, None)
    return {c: j.get(c) for c in CSV_COLUMNS}
