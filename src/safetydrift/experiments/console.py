"""The run's headline on the terminal: ASR per variant with its change against the reference, utility, the
refusal margin's change, size, and the expected-vs-observed table."""

from __future__ import annotations

from safetydrift.records import ExperimentResult


def print_headline(result: ExperimentResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from safetydrift.report.format import pct
    from safetydrift.report.sections import margin_view

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
        m = margin_view(u)  # paired change of the refusal margin vs the reference, Wilcoxon p (raw, Holm)
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
    if result.expectations:
        e = Table(title="expected (literature) vs observed (this run)")
        for col in ("variant", "expected ASR", "claim", "verdict", "why", "utility"):
            e.add_column(col, overflow="fold")
        for x in result.expectations:
            e.add_row(x.variant, x.expected, x.claim or "–", x.verdict, x.why, x.utility_verdict or "–")
        Console().print(e)
