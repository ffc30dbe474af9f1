"""Experiment report: every variant against its reference, in one self-contained HTML file plus PNG/CSV exports.

This module only puts the parts together:

- ``data.ExperimentView``: the typed result's sections with the indexes the page needs;
- ``sections`` / ``samples``: the page's rows as formatted text (``format``: how numbers print);
- ``tables``: ``tables/*.csv``; ``figures``: ``figures/*.png``, embedded in the page;
- ``templates/experiment.html.j2`` (with ``experiment.css.j2`` and ``experiment.js.j2`` inlined): the page.

Safety of the page itself
- Jinja2 autoescaping is always on (``html.environment()``): prompts, responses, recipes, category names and
  configs are rendered as text, never markup.
- The per-sample explorer reads its data from ``<script type="application/json">`` filled with Jinja's
  ``tojson`` filter, which escapes ``<``, ``>``, ``&`` and ``'`` as ``\\u003c`` etc., so no string can close the
  script element. The JavaScript builds the DOM with ``createElement`` + ``textContent`` only (no
  ``innerHTML``).
- A Content-Security-Policy with a per-render nonce allows only the report's own script and ``data:`` images,
  so even a hypothetical escaping bug could not run injected script or load anything from the network.
- Figures are embedded as base64 ``data:image/png`` URIs; there are no external URLs.

Empty sections (no comparisons, no guards, no LogitLens, ...) are left out of the page.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetydrift.records import ExperimentResult, Record
from safetydrift.report import sections
from safetydrift.report.data import ExperimentView
from safetydrift.report.figures import FigureSet, draw_all
from safetydrift.report.format import MISSING
from safetydrift.report.html import environment
from safetydrift.report.samples import explorer, tree_view
from safetydrift.report.tables import write_tables
from safetydrift.store import atomic_write_text

__all__ = ["TEMPLATE", "render_experiment_report"]

TEMPLATE = "experiment.html.j2"


def render_experiment_report(result: ExperimentResult, records: Sequence[Record], out_dir: Path) -> Path:
    """Write out_dir/report.html (self-contained), out_dir/figures/*.png and out_dir/tables/*.csv.

    ``records`` are the judged samples the explorer shows. Returns the path of report.html.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    E = ExperimentView(result)
    tables = out_dir / "tables"
    runs = sections.runs_rows(E)
    write_tables(E, runs, tables)
    figures = FigureSet(out_dir)
    draw_all(E, figures, runs, out_dir)
    html = environment().get_template(TEMPLATE).render(**_page(E, records, runs, figures, tables))
    out = out_dir / "report.html"
    atomic_write_text(out, html)
    return out


def _page(E: ExperimentView, records: Sequence[Record], runs: list[dict[str, Any]], figures: FigureSet,
          tables: Path) -> dict[str, Any]:
    """The template's context: every section as rows of text; an empty section is left out of the page."""
    return {
        "title": E.title,
        "missing": MISSING,
        "nonce": secrets.token_urlsafe(18),
        "headline": sections.headline_groups(E),
        "show_eval": bool(E.varying),
        "eval_head": " · ".join(E.varying),
        "constant": E.constant,
        "comparisons": sections.comparison_rows(E),
        "expectations": sections.expectation_rows(E),
        "figures": figures.of("figures"),
        "logitlens": figures.of("logitlens"),
        "runs": runs,
        "runs_figs": figures.of("runs"),
        "agreement": sections.agreement_rows(E),
        "trees": [t for t in (tree_view(t) for t in E.trees) if t is not None],
        "guards": sections.guard_rows(E),
        "flips": sections.flip_rows(E),
        "judge": sections.headline_judge(E),
        "disagreements": sections.disagreement_rows(E),
        "judge_notes": sections.judge_notes(E),
        "explorer": explorer(E, records),
        "n_records": len(records),
        "provenance": sections.provenance(E, records),
        # a sweep's page (written next to this one by experiments/sweep_run.py) holds the map's verdicts
        "sweep_page": "sweep.html" if "sweep" in E.config else None,
        "csvs": sorted(p.name for p in tables.glob("*.csv")) if tables.is_dir() else [],
    }
