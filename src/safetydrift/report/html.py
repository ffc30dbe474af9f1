"""Self-contained HTML reports. Jinja2 autoescaping is on: every prompt and response is text, never markup."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, PackageLoader

from safetydrift.records import EvalSummary, Record
from safetydrift.report import format as fmt
from safetydrift.store import atomic_write_text


def environment() -> Environment:
    """The Jinja environment of every report template (``report/templates/``).

    ``autoescape=True`` for every template whatever its name (not a file-extension rule), so the included
    CSS/JS parts and any template added later are escaped too.
    """
    env = Environment(
        loader=PackageLoader("safetydrift.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = fmt.pct
    env.filters["num"] = fmt.num
    return env


def render_eval_report(records: Sequence[Record], summary: EvalSummary, out: Path, title: str = "safetydrift") -> Path:
    """The ``eval`` report: ASR per model × attack × judge (``summary``), per category, and every sample."""
    html = environment().get_template("eval.html.j2").render(title=title, summary=summary, records=records)
    atomic_write_text(out, html)
    return out
