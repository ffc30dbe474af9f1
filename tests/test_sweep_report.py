"""The map's evidence and page from a synthetic run (no models): every rule shows, with its figures and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from safetydrift.analysis.freelunch import SweepRow, decide, evidence, parting_dose
from safetydrift.experiments.sweep import parse_sweep
from safetydrift.experiments.sweep_run import control_kinds
from safetydrift.records import AsrRow, Comparison, ExperimentResult, UtilityRow, VariantSummary
from safetydrift.report.sweep import CSV_COLUMNS, render_sweep_report

SPEC = parse_sweep({
    "base": "tiny-random",
    "attack": [{"dose": 10, "recipe": "finetune:n=10"}, {"dose": 100, "recipe": "finetune:n=100"}],
    "compress": {"bdi": "bitdelta:heal=false", "scale": "bitdelta:scale=0.7", "rest-ref": "bitdelta:heal=false,rest=ref",
                 "rank": "bitdelta:rank=4,heal=false"},
})
CELL = ("advbench50", "direct", "refusal")
N = 40
# ASR per variant; at d10 nothing parts, at d100: bdi is a free lunch, rank tracks the scale control,
# rest-ref drops alone at d10 (an artefact); at d100 its twin drops too, so it is read as any cell
ASR = {"aligned": 0.05, "d10-s0-ft": 0.6, "d10-s0-bdi": 0.6, "d10-s0-scale": 0.55, "d10-s0-rest-ref": 0.1,
       "d10-s0-rank": 0.6, "d100-s0-ft": 0.8, "d100-s0-bdi": 0.1, "d100-s0-scale": 0.3, "d100-s0-rest-ref": 0.1,
       "d100-s0-rank": 0.32}
MARGIN = {"aligned": 2.0, "d10-s0-ft": -1.0, "d100-s0-ft": -2.0}


def _asr(name: str, judge: str, asr: float) -> AsrRow:
    k = round(asr * N)
    return AsrRow(variant=name, recipe=name, dataset=CELL[0], attack=CELL[1], judge=judge, n=N, successes=k,
                  unscorable=0, asr=k / N, ci_low=max(0, k / N - 0.1), ci_high=min(1, k / N + 0.1))


def _result() -> ExperimentResult:
    cells = {c.name: c for c in SPEC.cells()}
    asr, comps, util = [], [], []
    for name, a in ASR.items():
        for judge in ("refusal", "keyword"):
            asr.append(_asr(name, judge, a))
        ref = cells[name].reference
        if ref is not None:
            diff = a - ASR[ref]
            p = 0.001 if diff <= -0.2 else 0.8
            for judge in ("refusal", "keyword"):
                comps.append(Comparison(variant=name, reference=ref, dataset=CELL[0], attack=CELL[1], judge=judge,
                                        n_pairs=N, n_items=N, test="mcnemar-exact", asr_ref=ASR[ref], asr_variant=a,
                                        diff=diff, diff_ci=None, p_exact=p, p_midp=p, rrr=None, rrr_ci=None,
                                        b01=0, b10=0, p_holm=p))
        m = MARGIN.get(name, 1.2 if a < 0.3 else -0.5)
        util.append(UtilityRow(variant=name, mc_acc=0.5 if name != "d100-s0-rank" else 0.3, refusal_margin=m,
                               margin_p_holm=0.01,
                               margin_retention_ci=(0.123, 0.456) if name == "d100-s0-bdi" else None))
    variants = tuple(VariantSummary(name=c.name, recipe=c.recipe, reference=c.reference, size_bytes=1000)
                     for c in cells.values())
    return ExperimentResult(name="synthetic-map", variants=variants, asr=tuple(asr), comparisons=tuple(comps),
                            utility=tuple(util), headline_judge="refusal")


def test_evidence_rules_and_page(tmp_path: Path) -> None:
    result = _result()
    controls = control_kinds(SPEC)
    assert controls == {"scale": "scale"}
    ev = evidence(SPEC, result, CELL, p_scale={"d100-s0-rank": 0.9, "d100-s0-bdi": 0.001}, controls=controls)
    rows = [SweepRow(e, decide(e)) for e in ev]
    got = {r.evidence.name: r.verdict.rule for r in rows}
    assert got == {
        "d10-s0-bdi": "none", "d10-s0-scale": "control", "d10-s0-rest-ref": "rest artefact", "d10-s0-rank": "none",
        "d100-s0-bdi": "free lunch", "d100-s0-scale": "control", "d100-s0-rest-ref": "free lunch",
        "d100-s0-rank": "shrinkage only"}
    bdi = next(r.evidence for r in rows if r.evidence.name == "d100-s0-bdi")
    assert bdi.r == (1.2 - 2.0) / (-2.0 - 2.0) and bdi.utility_loss == 0.0 and bdi.asr_scale == 0.3
    assert bdi.other_judges == {"keyword": (0.1, 0.001)} and bdi.size_bytes == 1000
    assert bdi.r_ci == (0.123, 0.456) and bdi.control is None
    assert parting_dose(rows) == "d10"  # the rest=ref drop at d10 is the first parting

    page = render_sweep_report(SPEC, result, rows, CELL, tmp_path, parting="d10")
    html = page.read_text()
    for text in ("Decision rules", "free lunch", "rest artefact", "shrinkage only", "d100-s0-rank", "dose <b>d10</b>",
                 "0.20 [0.12, 0.46]", "the yardstick, not graded"):
        assert text in html, text
    assert html.count("data:image/png;base64,") == 3
    for fig in ("sweep_asr_dose", "sweep_r_dose", "sweep_frontier"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000
    with (tmp_path / "tables" / "sweep_cells.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(CSV_COLUMNS) and len(table) == 8
    assert {r["name"]: r["rule"] for r in table} == got
    row = next(r for r in table if r["name"] == "d100-s0-bdi")
    assert (row["r_ci_low"], row["r_ci_high"], row["control"]) == ("0.123", "0.456", "")
    assert next(r for r in table if r["name"] == "d10-s0-scale")["control"] == "scale"


def test_control_kinds_come_from_the_transform() -> None:
    spec = parse_sweep({"base": "tiny-random", "attack": [{"dose": 1, "recipe": "finetune:n=1"}], "compress": {
        "a": "bitdelta:heal=false", "b": "bitdelta:matched=true", "c": "bitdelta:signs=random,heal=false",
        "d": "bitdelta:scale=0.5", "e": "bitdelta:bits=2", "f": "quantize:bits=8",
        "g": "bitdelta:signs=random,heal=false>guard:output=keyword"}, "scale_control": "b"})
    # a serving guard after a control leaves it a control
    assert control_kinds(spec) == {"b": "scale_matched", "c": "random_sign", "d": "scale", "g": "random_sign"}


def test_r_not_established_is_never_a_free_lunch() -> None:
    result = _result()
    util = tuple(u if u.variant != "d100-s0-bdi" else UtilityRow(
        variant=u.variant, mc_acc=u.mc_acc, refusal_margin=u.refusal_margin, margin_p_holm=0.01,
        margin_meta={"retention": "not established: the shift of d100-s0-ft from aligned is not clear of 0"})
        for u in result.utility)
    result = result.__class__(**{**result.__dict__, "utility": util})
    ev = {e.name: e for e in evidence(SPEC, result, CELL, controls=control_kinds(SPEC))}
    assert ev["d100-s0-bdi"].r is None  # not recomputed from the means
    v = decide(ev["d100-s0-bdi"])
    assert v.rule == "none" and "not established" in v.why


def test_page_escapes_names(tmp_path: Path) -> None:
    result = _result()
    rows = [SweepRow(e, decide(e)) for e in evidence(SPEC, result, CELL)]
    html = render_sweep_report(SPEC, result.__class__(**{**result.__dict__, "name": "<script>x</script>"}), rows,
                               CELL, tmp_path).read_text()
    assert "<script>x" not in html and "&lt;script&gt;" in html


def test_only_compressions_are_tested_against_the_scale_control() -> None:
    """The paired X-vs-scale tests (one Holm family) leave every control out, the tracked one included."""
    from types import SimpleNamespace

    from safetydrift.experiments.sweep_run import _scale_p

    spec = parse_sweep({"base": "tiny-random", "attack": [{"dose": 1, "recipe": "finetune:n=1"}], "compress": {
        "bdi": "bitdelta:heal=false", "matched": "bitdelta:matched=true", "scale": "bitdelta:scale=0.7",
        "random": "bitdelta:signs=random,heal=false"}})
    exp = SimpleNamespace(variants=[SimpleNamespace(name=c.name, recipe=c.recipe) for c in spec.cells()])
    seen: list[list[tuple[str, str, str, str]]] = []

    def fake_tests(records: object, pairs: list[tuple[str, str, str, str]], cell: object) -> dict[str, float]:
        seen.append(pairs)
        return {p[0]: 0.5 for p in pairs}

    got = _scale_p(spec, exp, [], CELL, fake_tests, control_kinds(spec))  # type: ignore[arg-type]
    assert spec.scale_control == "matched"
    assert got == {"d1-s0-bdi": 0.5} and [p[2] for p in seen[0]] == ["d1-s0-matched"]
