"""`safetydrift map`: several finished parts read back as one map, and parts that measure different things refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import load_script
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
    m = combine([a, b])
    spec, result, rows, cell = m.spec, m.result, m.rows, m.cell
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


def test_doses_that_share_a_value_are_drawn_apart_and_in_order() -> None:
    spec = parse_sweep(B | {"attack": [*B["attack"], {"dose": 1, "recipe": "finetune:n=10"}]})
    at = dose_positions(spec.doses)
    assert at["d1"] == 1 and at["d2"] == 2 and at["d8rep"] == 8  # a value of its own is kept
    # the packaged parts' doses together: st3 = 3 steps, st4 and st4rep share 4, sgd doses share 1, 3 and 5
    raw = [("st1", 1), ("sgd1", 1), ("st2", 2), ("st3", 3), ("sgd3", 3), ("st4", 4), ("st4rep", 4), ("sgd5", 5),
           ("st20", 20)]
    spec2 = parse_sweep(A | {"attack": [{"dose": v, "label": k, "recipe": f"finetune:n={10 + i}"}
                                        for i, (k, v) in enumerate(raw)]})
    at2 = dose_positions(spec2.doses)
    assert len(set(at2.values())) == len(raw)  # nothing drawn on top of anything else
    order = sorted(raw, key=lambda kv: at2[kv[0]])
    assert [v for _, v in order] == sorted(v for _, v in raw)  # no dose passes a larger one


def test_a_part_given_twice_or_a_cell_in_two_parts(tmp_path: Path) -> None:
    a = load_part(_part(tmp_path / "a", A, A_ASR, "part-a"))
    with pytest.raises(DataError, match="given twice"):
        combine([a, load_part(tmp_path / "a")])
    # a rerun of part A's first dose in another directory: its cells are A's, read from A (the first part)
    rerun = load_part(_part(tmp_path / "a2", A | {"attack": A["attack"][:1]},
                            {k: (0.5 if k == "d2-s0-bdi" else v) for k, v in A_ASR.items() if not k.startswith("d8")},
                            "part-a-rerun"))
    m = combine([a, rerun])
    assert len(m.rows) == len(a.rows) and m.part_of["d2-s0-bdi"] == "part-a"
    assert next(r for r in m.rows if r.evidence.name == "d2-s0-bdi").evidence.asr_x == 0.1
    assert [x.variant for x in m.result.asr].count("d2-s0-bdi") == 1
    with pytest.raises(DataError, match="part's own directory"):
        render_map([a, rerun], tmp_path / "a")


def test_other_utility_settings_drop_the_frontier_only(tmp_path: Path) -> None:
    a = load_part(_part(tmp_path / "a", A, A_ASR, "part-a"))
    b = _part(tmp_path / "b", B, B_ASR, "part-b")
    doc = json.loads((b / "experiment.json").read_text())
    doc["config"]["utility"] = {"mc": 200}
    (b / "experiment.json").write_text(json.dumps(doc))
    m = combine([a, load_part(b)])
    assert m.utility_differs == ("part-b",)
    html = render_map([a, load_part(b)], tmp_path / "map").read_text()
    assert "utility settings differ" in html and html.count("data:image/png;base64,") == 2


@pytest.mark.parametrize(("change", "match"), [
    ({"base": "tiny-random>align"}, "another base"),
    ({"attack": [{"dose": 2, "recipe": "finetune:n=30"}]}, "dose 'd2' means one thing"),
    ({}, "another generation"),
])
def test_parts_that_measure_different_things_are_refused(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    a = load_part(_part(tmp_path / "a", A, A_ASR, "part-a"))
    if match == "another generation":  # a setting outside the sweep: block
        c = _part(tmp_path / "c", A, A_ASR, "part-c")
        doc = json.loads((c / "experiment.json").read_text())
        doc["config"]["generation"] = {"max_new_tokens": 64}
        (c / "experiment.json").write_text(json.dumps(doc))
        with pytest.raises(DataError, match=match):
            combine([a, load_part(c)])
        return
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


def _archive_module() -> Any:

    return load_script("archive_part")


def test_an_archived_part_draws_the_same_map_and_a_broken_one_leaves_nothing(tmp_path: Path) -> None:
    """scripts/archive_part.py keeps what `map` reads; the map drawn from the archive is the map of the run."""
    from safetydrift.cli import main

    mod = _archive_module()
    out = _part(tmp_path / "run", A, A_ASR, "part-a")
    (out / "sweep").mkdir()
    (out / "sweep" / "runs.jsonl").write_text('{"phase": "x"}\n')
    (out / "sweep" / "cells.jsonl").write_text('{"cell": "aligned", "seconds": 1.0}\n')
    (out / "tables").mkdir()
    (out / "tables" / "sweep_cells.csv").write_text("a,b\n1,2\n")
    (out / "results.jsonl").write_text("answers stay out of the archive\n")
    kept = mod.archive(out, tmp_path / "parts")
    assert kept == tmp_path / "parts" / "part-a"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "experiment.json", "sweep.json", "sweep/cells.jsonl", "sweep/runs.jsonl", "tables/sweep_cells.csv"]
    assert [r.to_json() for r in load_part(kept).rows] == [r.to_json() for r in load_part(out).rows]
    assert main(["--quiet", "map", str(kept), "--out", str(tmp_path / "m1")]) == 0
    assert main(["--quiet", "map", str(out), "--out", str(tmp_path / "m2")]) == 0
    assert (tmp_path / "m1" / "tables" / "map_cells.csv").read_text() == (
        tmp_path / "m2" / "tables" / "map_cells.csv").read_text()
    # archived again after a change: replaced, and nothing hidden is left beside it
    (out / "tables" / "sweep_cells.csv").write_text("a,b\n3,4\n")
    assert mod.archive(out, tmp_path / "parts") == kept
    assert (kept / "tables" / "sweep_cells.csv").read_text() == "a,b\n3,4\n"
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["part-a"]
    # a part without its ledger is refused, and the archive already there is left as it was
    (out / "sweep" / "runs.jsonl").unlink()
    for dest in (tmp_path / "parts", tmp_path / "parts2"):
        with pytest.raises(DataError, match="runs.jsonl"):
            mod.archive(out, dest)
    assert not (tmp_path / "parts2").exists() or not any((tmp_path / "parts2").iterdir())
    assert (kept / "sweep" / "runs.jsonl").is_file() and sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "part-a"]


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b"])
def test_archive_refuses_a_name_that_is_not_one_directory(tmp_path: Path, name: str) -> None:
    mod = _archive_module()
    out = _part(tmp_path / "run", A, A_ASR, "part-a")
    doc = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps({**doc, "name": name}))
    (tmp_path / "parts" / "keep").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot name a directory"):
        mod.archive(out, tmp_path / "parts")
    assert [p.name for p in (tmp_path / "parts").iterdir()] == ["keep"]
