"""Paired analysis of judged records: variant-vs-reference tests as one Holm family, where judges of one
semantic disagree on them, and agreement between judges.

Both sides of a comparison are judged on the same (item, unit)s, so the test is paired: McNemar's exact
test, or the exact cluster sign-flip test where an item has several units (``core.compare_paired``).
Every test of a run is Holm-corrected together, including the extra tests expectations ask for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from safetydrift.records import Comparison, DirectionFlip, JudgeAgreement, JudgeDisagreement, Record
from safetydrift.stats.core import cohen_kappa, compare_paired, holm

Cell = tuple[str, str, str]  # (dataset, attack, judge) as the records name them
Samples = dict[tuple[str, str, str, str], dict[tuple[str, str], str]]


@dataclass(frozen=True)
class Pairing:
    """A variant to test against another model: on every cell both were measured in, or on ``cell`` only."""

    variant: str
    variant_recipe: str
    other: str
    other_recipe: str
    kind: Literal["reference", "expectation"] = "reference"
    cell: Cell | None = None


def samples_by_cell(records: Iterable[Record]) -> Samples:
    """(model, dataset, attack, judge) → {(item_id, unit): verdict}."""
    out: Samples = defaultdict(dict)
    for r in records:
        out[(r.model, r.dataset, r.attack, r.judge)][(r.item_id, r.unit)] = r.verdict
    return out


def paired_row(samples: Samples, p: Pairing, cell: Cell) -> Comparison | None:
    """One paired test of ``p.variant`` against ``p.other`` on the (item, unit)s both scored."""
    verdicts, ref_verdicts = samples.get((p.variant_recipe, *cell)), samples.get((p.other_recipe, *cell))
    if not verdicts or not ref_verdicts:
        return None
    keys = [k for k in verdicts if k in ref_verdicts
            and verdicts[k] != "unscorable" and ref_verdicts[k] != "unscorable"]
    if not keys:
        return None
    a = [ref_verdicts[k] == "success" for k in keys]
    b = [verdicts[k] == "success" for k in keys]
    c = compare_paired(a, b, clusters=[item for item, _unit in keys])
    return Comparison(
        variant=p.variant, reference=p.other, dataset=cell[0], attack=cell[1], judge=cell[2], kind=p.kind,
        n_pairs=c["n_pairs"], n_items=c["n_items"], test=c["test"], asr_ref=c["asr_a"], asr_variant=c["asr_b"],
        diff=c["diff"], diff_ci=c["diff_ci"], p_exact=c["p_exact"], p_midp=c["p_midp"], rrr=c["rrr"],
        rrr_ci=c["rrr_ci"], b01=c["b01"], b10=c["b10"],
    )


def paired_comparisons(records: Iterable[Record], pairings: Sequence[Pairing]) -> list[Comparison]:
    """Every pairing's tests, in order, with Holm-adjusted p-values over all of them (one family per run)."""
    samples = samples_by_cell(records)
    out: list[Comparison] = []
    for p in pairings:
        cells = [p.cell] if p.cell is not None else [
            (ds, attack, judge) for (model, ds, attack, judge) in samples if model == p.variant_recipe]
        out.extend(row for cell in cells if (row := paired_row(samples, p, cell)) is not None)
    return [replace(row, p_holm=adj) for row, adj in zip(out, holm([r.p_exact for r in out]), strict=True)]


def judge_agreement(records: Iterable[Record], judges: Sequence[str]) -> list[JudgeAgreement]:
    """Raw agreement and Cohen's kappa of each pair of judges on the samples both could score."""
    per: dict[str, dict[tuple[str, ...], str]] = defaultdict(dict)
    for r in records:
        per[r.judge][(r.model, r.dataset, r.attack, r.item_id, r.unit)] = r.verdict
    rows = []
    names = [j for j in judges if j in per]
    for i, ja in enumerate(names):
        for jb in names[i + 1 :]:
            keys = [k for k, v in per[ja].items() if k in per[jb] and v != "unscorable" and per[jb][k] != "unscorable"]
            a = [per[ja][k] == "success" for k in keys]
            b = [per[jb][k] == "success" for k in keys]
            rows.append(JudgeAgreement(
                judge_a=ja, judge_b=jb, n=len(keys),
                agreement=(sum(x == y for x, y in zip(a, b, strict=True)) / len(keys)) if keys else None,
                kappa=cohen_kappa(a, b)))
    return rows


def direction_flips(comps: Iterable[Comparison]) -> list[DirectionFlip]:
    """Variants whose ASR change has opposite signs under two judges, whatever they measure.

    Kept for reading and re-analysing older runs; a run now records :func:`judge_disagreements`, which pairs
    only judges of one semantic (a refusal judge and a harm judge answer different questions)."""
    groups: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(dict)
    for c in comps:
        groups[(c.variant, c.reference, c.dataset, c.attack)][c.judge] = c.diff
    return [DirectionFlip(variant=v, reference=ref, dataset=ds, attack=atk, diffs=diffs)
            for (v, ref, ds, atk), diffs in groups.items()
            if any(d > 0 for d in diffs.values()) and any(d < 0 for d in diffs.values())]


def _significant(p: float | None, alpha: float) -> bool | None:
    """Holm p below α; None where the test was not Holm-adjusted (then significance is not compared)."""
    return None if p is None else p < alpha


def judge_disagreements(comps: Iterable[Comparison], semantics: Mapping[str, str],
                        alpha: float = 0.05) -> list[JudgeDisagreement]:
    """Comparisons whose reading depends on which judge of one semantic is asked.

    For each (variant, reference, dataset, attack) and each pair of judges with the same ``semantics``
    (judge name → semantic), a disagreement is "direction" when one judge sees the ASR go up and the other
    down (a zero change is neither), "significance" when exactly one judge's Holm-adjusted p is below
    ``alpha``, or "both". Judges of different semantics, or with none declared, are never paired: they
    measure different things, so differing is not disagreeing. Pairs follow the order of ``semantics``
    (the experiment's judge order), then the order the comparisons name their judges.
    """
    groups: dict[tuple[str, str, str, str], dict[str, Comparison]] = defaultdict(dict)
    for c in comps:
        groups[(c.variant, c.reference, c.dataset, c.attack)].setdefault(c.judge, c)
    order = {j: i for i, j in enumerate(semantics)}
    out: list[JudgeDisagreement] = []
    for (variant, reference, dataset, attack), by_judge in groups.items():
        judges = sorted(by_judge, key=lambda j: order.get(j, len(order)))  # stable: unknown judges keep their order
        for i, ja in enumerate(judges):
            for jb in judges[i + 1:]:
                if ja not in semantics or semantics[ja] != semantics.get(jb):
                    continue
                a, b = by_judge[ja], by_judge[jb]
                direction = (a.diff > 0 and b.diff < 0) or (a.diff < 0 and b.diff > 0)
                sig_a, sig_b = _significant(a.p_holm, alpha), _significant(b.p_holm, alpha)
                significance = sig_a is not None and sig_b is not None and sig_a != sig_b
                if not (direction or significance):
                    continue
                out.append(JudgeDisagreement(
                    variant=variant, reference=reference, dataset=dataset, attack=attack, judge_a=ja, judge_b=jb,
                    diff_a=a.diff, diff_b=b.diff, p_a=a.p_holm, p_b=b.p_holm,
                    kind="both" if direction and significance else ("direction" if direction else "significance")))
    return out
