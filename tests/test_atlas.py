"""`safetydrift map`: several finished parts read back as one map, and parts that measure different things refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from safetydrift.analysis.freelunch import SweepRow, decide, evidence
from safetydrift.errors import DataError
from safetydrift.experiments.sweep import parse_sweep
from safetydrift.experiments.sweep_run import control_kinds
from safetydrift.records import AsrRow, Comparison, ExperimentResult, UtilityRow, VariantSummary
from safetydrift.report.atlas import combine, load_part, render_map
from safetydrift.report.sweep import dose_positions

CELL = ("advbench50", "direct", "refusal")
N = 40


def _part(out: Path, raw: dict[str, Any], asr: dict[str, float], name: str) -> Path:
    """A finished part's sweep.json and experiment.json from a synthetic result (every compression drops)."""
    spec = parse_sweep(raw)
    cells = {c.name: c for c in spec.cells()}
    rows_a, comps, util = [], [], []
    for v, a in asr.items():
        k = round(a * N)
        rows_a.append(AsrRow(variant=v, recipe=cells[v].recipe, dataset=CELL[0], attack=CELL[1], judge=CELL[2], n=N,
                             successes=k, unscorable=0, asr=k / N, ci_low=max(0, k / N - 0.1),
                             ci_high=min(1, k / N + 0.1)))
        ref = cells[v].reference
        if ref is not None:
            p = 0.001 if a - asr[ref] <= -0.2 else 0.8
            comps.append(Comparison(variant=v, reference=ref, dataset=CELL[0], attack=CELL[1], judge=CELL[2],
                                    n_pairs=N, n_items=N, test="mcnemar-exact", asr_ref=asr[ref], asr_variant=a,
                                    diff=a - asr[ref], diff_ci=None, p_exact=p, p_midp=p, rrr=None, rrr_ci=None,
                                    b01=0, b10=0, p_holm=p))
        util.append(UtilityRow(variant=v, mc_acc=0.5, refusal_margin=2.0 - 4 * a, margin_p_holm=0.01,
                               margin_retention_ci=(0.1, 0.3)))
    result = ExperimentResult(name=name, config={"name": name, "sweep": raw},
                              variants=tuple(VariantSummary(name=c.name, recipe=c.recipe, reference=c.reference)
                                             for c in cells.values()),
                              asr=tuple(rows_a), comparisons=tuple(comps), utility=tuple(util))
    rows = [SweepRow(e, decide(e)) for e in evidence(spec, result, CELL, controls=control_kinds(spec))]
    out.mkdir(parents=True)
    (out / "experiment.json").write_text(json.dumps(result.to_json(), default=str))
    (out / "sweep.json").write_text(json.dumps({"format": 1, "name": name, "decision_cell": list(CELL),
                                                "rules": {"min_gain": 0.3, "saturation": 0.95, "alpha": 0.05,
                                                          "max_r": 0.8, "max_utility_loss": 0.1, "track": 0.1},
                                                "parting_dose": "d2", "cells": [r.to_json() for r in rows]},
                                               default=str))
    return out


A = {"base": "tiny-random", "attack": [{"dose": 2, "recipe": "finetune:n=20"}, {"dose": 8, "recipe": "finetune:n=80"}],
     "compress": {"bdi": "bitdelta:heal=false", "scale": "bitdelta:scale=0.7"}}
A_ASR = {"aligned": 0.0, "d2-s0-ft": 0.6, "d2-s0-bdi": 0.1, "d2-s0-scale": 0.5, "d8-s0-ft": 0.9, "d8-s0-bdi": 0.85,
         "d8-s0-scale": 0.9}
# part B: the same dose d2 with another seed, and a dose with the same value as d8 but other stages
B = {"base": "tiny-random", "attack": [{"dose": 2, "recipe": "finetune:n=20"},
                                       {"dose": 8, "label": "d8rep", "recipe": "finetune:n=20,epochs=4"}],
     "compress": {"bdi": "bitdelta:heal=false"}, "seeds": [1]}
B_ASR = {"aligned": 0.0, "d2-s1-ft": 0.7, "d2-s1-bdi": 0.2, "d8rep-s1-ft": 0.92, "d8rep-s1-bdi": 0.9}


def test_two_parts_make_one_map(tmp_path: Path) -> None:
    a = load_part(_part(tmp_path / "a", A, A_ASR, "part-a"))
    b = load_part(_part(tmp_path / "b", B, B_ASR, "part-b"))
    spec, result, rows, cell, _ = combine([a, b])
    assert [d.label for d in spec.doses] == ["d2", "d8", "d8rep"] and spec.seeds == (0, 1)
    assert cell == CELL and [c for c, _ in spec.compress] == ["bdi", "scale"]
    assert sorted(r.evidence.name for r in rows) == sorted(n for n in [*A_ASR, *B_ASR] if n.count("-") == 2
                                                           and not n.endswith("-ft"))
    assert [v.name for v in result.variants].count("aligned") == 1  # the base is read from the first part
    assert next(r for r in rows if r.evidence.name == "d2-s1-bdi").verdict.rule == "free lunch"

    page = render_map([a, b], tmp_path / "map")
    html = page.read_text()
    for text in ("part-a", "part-b", "Holm was applied within each part", "free lunch (s0, s1)", "d8rep"):
        assert text in html, text
    assert html.count("data:image/png;base64,") == 3
    with (tmp_path / "map" / "tables" / "map_cells.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {r["name"]: r["part"] for r in table}["d8rep-s1-bdi"] == "part-b" and len(table) == len(rows)


def test_doses_that_share_a_value_are_drawn_apart() -> None:
    spec = parse_sweep(B | {"attack": [*B["attack"], {"dose": 1, "recipe": "finetune:n=10"}]})
    at = dose_positions(spec.doses)
    assert at["d1"] == 1 and at["d2"] == 2 and at["d8rep"] == 8  # the first of a value keeps it
    spec2 = parse_sweep(A | {"attack": [*A["attack"], {"dose": 8, "label": "d8rep", "recipe": "finetune:n=5"}]})
    at2 = dose_positions(spec2.doses)
    assert at2["d8"] == 8 and at2["d8rep"] > 8 and at2["d2"] == 2


@pytest.mark.parametrize(("change", "match"), [
    ({"base": "tiny-random>align"}, "another base"),
    ({"attack": [{"dose": 2, "recipe": "finetune:n=30"}]}, "dose 'd2' means one thing"),
])
def test_parts_that_measure_different_things_are_refused(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    a = load_part(_part(tmp_path / "a", A, A_ASR, "part-a"))
    raw = A | change
    asr = {k: v for k, v in A_ASR.items() if k == "aligned" or k.startswith("d2-")}
    c = load_part(_part(tmp_path / "c", raw | {"seeds": [3]}, {k.replace("-s0-", "-s3-"): v for k, v in asr.items()},
                        "part-c"))
    with pytest.raises(DataError, match=match) as e:
        combine([a, c])
    assert "\n" not in str(e.value)


def test_a_missing_or_broken_part_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    from safetydrift.cli import main

    good = _part(tmp_path / "a", A, A_ASR, "part-a")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sweep.json").write_text("{not json")
    (broken / "experiment.json").write_text("{}")
    for bad in (tmp_path / "nowhere", broken):
        with pytest.raises(DataError) as e:
            load_part(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
        assert main(["map", str(good), str(bad), "--out", str(tmp_path / "out")]) != 0
        assert not (tmp_path / "out").exists()
    assert main(["--quiet", "map", str(good), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "map.html").is_file()
