"""The run's headline on the terminal: ASR per variant with its change against the reference, utility, the
refusal margin's change, size, which judge the headline is (and how many comparisons judges of its kind read
differently), and the expected-vs-observed table."""

from __future__ import annotations

from typing import Any

from safetydrift.records import ExperimentResult


def print_headline(result: ExperimentResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from safetydrift.report.data import ExperimentView
    from safetydrift.report.format import pct
    from safetydrift.report.sections import headline_judge, margin_view

    util = {u.variant: u for u in result.utility}
    comps = {(c.variant, c.judge): c for c in result.comparisons}
    first = result.asr[0] if result.asr else None
    t = Table(title=f"{result.name}: ASR ({first.dataset}, {first.attack}, {first.judge})" if first else result.name)
    for col in ("variant", "ASR", "95% CI", "Δ vs ref", "p (Holm)", "task acc", "over-refusal", "margin Δ", "size"):
        t.add_column(col, overflow="fold")
    for v in result.variants:
        a = next((x for x in result.asr if first and x.variant == v.name and x.cell == first.cell), None)
        c = comps.get((v.name, first.judge)) if first else None
        u = util.get(v.name)
        m = margin_view(u, bool(v.wrappers))  # paired change of the refusal margin vs the reference, Wilcoxon p (raw, Holm)
        margin = m["diff"] + (f", p {m['p']} (Holm {m['p_holm']})" if m["has_diff"] else "")
        t.add_row(
            v.name,
            pct(a.asr, 0) if a else "–",
            f"{pct(a.ci_low, 0)}–{pct(a.ci_high, 0)}" if a else "–",
            f"{pct(c.diff, 0, sign=True, suffix=' pts')} vs {c.reference}" if c else "–",
            f"{c.p_holm:.3g}" if c and c.p_holm is not None else "–",
            pct(u.benign_task_acc if u else None, 0),
            pct(u.over_refusal if u else None, 0),
            margin + (f" ({m['note']})" if m["note"] else ""),
            "–" if v.size_bytes is None else f"{v.size_bytes / 2**20:.0f} MiB",
        )
    Console().print(t)
    for line in _judge_lines(headline_judge(ExperimentView(result)), result):
        Console().print(line, markup=False, highlight=False)  # judge specs may hold [...]
    if result.expectations:
        e = Table(title="expected (literature) vs observed (this run)")
        for col in ("variant", "expected ASR", "claim", "verdict", "why", "utility"):
            e.add_column(col, overflow="fold")
        for x in result.expectations:
            e.add_row(x.variant, x.expected, x.claim or "–", x.verdict, x.why, x.utility_verdict or "–")
        Console().print(e)


def _judge_lines(judge: dict[str, Any] | None, result: ExperimentResult) -> list[str]:
    """The headline judge in words, the one beside it, and the count of same-semantic disagreements."""
    if judge is None:
        return []
    lines = [judge["text"], *([judge["second"]["text"]] if judge["second"] else [])]
    if result.judge_semantics is not None:
        n = len(result.judge_disagreements)
        lines.append(f"Judge disagreements (same semantic; direction or significance): {n}"
                     + (" (see report.html, 'Where the judges disagree')" if n else ""))
    return lines

