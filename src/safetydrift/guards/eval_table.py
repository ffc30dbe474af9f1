"""The held-out guard evaluation as numbers: rates with Wilson 95% intervals, latency, CSV and markdown.

A rate is blocked / judged. Requests without a verdict are left out and counted apart (``errors``): a
filter failed (a broken filter is neither a block nor a pass), or the generator gave no answer for an
output filter to judge (e.g. a templated prompt longer than its window). On harmful sets the rate is how much the
guard stops (higher is better); on the benign look-alikes it is the false-refusal rate (lower is better).
Latency is the time the guard adds per request (``guard_latency_s``: filter work, with a batch's cost
split evenly over it; replayed generation time is not in it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safetydrift.guards.evaluate import EvalSet, Outcome

#: The derived set: held-out harmful requests with no near-duplicate in the input classifier's training rows.
NOVEL = "harmful-novel"
COLUMNS = ("config", "set", "kind", "n", "blocked", "errors", "rate", "ci_low", "ci_high",
           "latency_mean_ms", "latency_p50_ms", "latency_p95_ms")
_HEADINGS = {
    "harmful": "held-out harmful blocked",
    "templated": "jailbreak-templated blocked",
    "benign": "benign look-alikes refused",
    NOVEL: "harmful, no training paraphrase",
}


@dataclass(frozen=True)
class Row:
    """One configuration on one set."""

    config: str
    set: str
    kind: str
    n: int  # requests with a verdict (errors left out)
    blocked: int
    errors: int
    rate: float
    ci_low: float
    ci_high: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float


def label(spec: str) -> str:
    """A configuration's short name: the guard step without ``guard:``."""
    return spec.removeprefix("guard:")


def latency_ms(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, p50, p95) in milliseconds; zeros for no values."""
    import numpy as np

    if not values:
        return (0.0, 0.0, 0.0)
    a = np.asarray(values, dtype=np.float64) * 1000.0
    return (round(float(a.mean()), 3), round(float(np.percentile(a, 50)), 3), round(float(np.percentile(a, 95)), 3))


def make_row(config: str, set_name: str, kind: str, outcomes: Sequence[Outcome]) -> Row:
    from safetydrift.stats.core import wilson_ci

    answered = [o for o in outcomes if o.error is None]
    blocked = sum(1 for o in answered if o.blocked_by is not None)
    n = len(answered)
    lo, hi = wilson_ci(blocked, n)
    return Row(config, set_name, kind, n, blocked, len(outcomes) - n, round(blocked / n, 4) if n else 0.0,
               round(lo, 4), round(hi, 4), *latency_ms([o.guard_latency_s for o in outcomes]))


def summarise(specs: Sequence[str], sets: Sequence[EvalSet], outcomes: Mapping[str, Mapping[str, list[Outcome]]],
              paraphrased: set[str]) -> list[Row]:
    """Rows per configuration and set, plus the harmful set without the training paraphrases."""
    rows: list[Row] = []
    for spec in specs:
        for s in sets:
            rows.append(make_row(label(spec), s.name, s.kind, outcomes[spec][s.name]))
        harmful = outcomes[spec][sets[0].name]
        rows.append(make_row(label(spec), NOVEL, "harmful", [o for o in harmful if o.item_id not in paraphrased]))
    return rows


def cell(r: Row) -> str:
    err = f", {r.errors} errors" if r.errors else ""
    return f"{r.rate:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] ({r.blocked}/{r.n}{err})"


def pooled_latency(outcomes: Mapping[str, Sequence[Outcome]]) -> tuple[float, float, float]:
    """(mean, p50, p95) ms over every request of every set a configuration saw."""
    return latency_ms([o.guard_latency_s for per_set in outcomes.values() for o in per_set])


def markdown(rows: Sequence[Row], meta: Mapping[str, Any]) -> str:
    """The table for docs/results.md: one line per configuration, each rate with its Wilson 95% CI, and
    the guard's latency over all of the configuration's requests (``meta["latency_ms"]``)."""
    sets = list(dict.fromkeys(r.set for r in rows))
    configs = list(dict.fromkeys(r.config for r in rows))
    head = ["guard configuration", *(_HEADINGS.get(s, s) for s in sets), "guard ms/request: mean · p50 · p95"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in configs:
        mine = {r.set: r for r in rows if r.config == c}
        lat = " · ".join(f"{v:.1f}" for v in meta["latency_ms"][c])
        lines.append("| " + " | ".join([f"`{c}`", *(cell(mine[s]) for s in sets), lat]) + " |")
    notes = [f"- `{name}`: {info['note']}; the generator's own answer was a refusal for "
             f"{info['generator_refused']} of {info['n']}." for name, info in meta["sets"].items()]
    notes.append(f"- `{NOVEL}`: the held-out harmful requests without a near-duplicate (the project's TF-IDF "
                 f"measure, threshold 0.35) among the input classifier's harmful training requests "
                 f"({meta['harmful_with_training_paraphrase']} of {meta['sets']['harmful']['n']} have one).")
    notes.append(f"- Generator `{meta['generator']}` (weights sha256 {str(meta['generator_weights_sha256'])[:12]}…), "
                 f"greedy, max_new_tokens={meta['generation']['max_new_tokens']}; requests in batches of "
                 f"{meta['batch']}. Rates: blocked / judged, Wilson 95% CI; errors: no verdict (no answer to judge, "
                 "or a filter failed).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def write_outputs(out: Path, rows: Sequence[Row], meta: Mapping[str, Any]) -> None:
    """``guards.csv`` (every row), ``guards.md`` (the table and its notes), ``summary.json``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "guards.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
    (out / "guards.md").write_text(markdown(rows, meta), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1),
                                      encoding="utf-8")
