"""The sweep: block expands into ordinary variants (a pure function of the YAML), and bad blocks fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from safetydrift.errors import DataError, SpecError, UnknownComponentError
from safetydrift.experiments import load_experiment, parse_experiment
from safetydrift.experiments.executors import eval_groups, eval_ray
from safetydrift.experiments.sweep import parse_sweep
from safetydrift.spec import parse_recipe

SWEEP = {
    "base": "tiny-random",
    "attack": [{"dose": 10, "recipe": "finetune:data=harmful,n=10,epochs=1"},
               {"dose": 100, "recipe": "finetune:data=harmful,n=100,epochs=1", "label": "big"}],
    "compress": {"bitdelta-initial": "bitdelta:heal=false", "scale": "bitdelta:scale=0.7",
                 "rest-ref": "bitdelta:heal=false,rest=ref", "random": "bitdelta:signs=random,heal=false"},
    "seeds": [0, 1],
}


def test_expansion_names_recipes_and_references() -> None:
    spec = parse_sweep(SWEEP)
    cells = spec.cells()
    assert len(cells) == 1 + 2 * 2 * (1 + 4)
    names = [c.name for c in cells]
    assert names[:7] == ["aligned", "d10-s0-ft", "d10-s0-bitdelta-initial", "d10-s0-scale", "d10-s0-rest-ref",
                         "d10-s0-random", "d10-s1-ft"]
    assert "big-s1-rest-ref" in names and len(set(names)) == len(names)
    by = {c.name: c for c in cells}
    ft = by["d10-s1-ft"]
    assert ft.reference == "aligned" and ft.recipe == str(parse_recipe(
        "tiny-random>finetune:data=harmful,n=10,epochs=1,seed=1"))
    bd = by["d10-s1-bitdelta-initial"]
    assert bd.reference == "d10-s1-ft" and bd.recipe == ft.recipe + ">bitdelta:heal=false"
    assert (bd.dose, bd.dose_value, bd.seed, bd.compress) == ("d10", 10.0, 1, "bitdelta-initial")
    assert by["aligned"].reference is None and by["aligned"].recipe == "tiny-random"
    # pure: the same YAML gives the same map
    assert parse_sweep(SWEEP).cells() == cells
    # controls: the scale control is found by its scale=, the rest=ref twin by its settings
    assert spec.scale_control == "scale"
    assert spec.twin("rest-ref") == "bitdelta-initial" and spec.twin("bitdelta-initial") is None
    assert spec.is_rest_ref("rest-ref") and not spec.is_rest_ref("scale")


def test_experiment_with_a_sweep_block_has_ordinary_variants() -> None:
    exp = parse_experiment({"name": "m", "sweep": SWEEP, "judges": ["keyword"],
                            "variants": {"extra": {"recipe": "tiny-random>quantize:method=rtn,bits=8",
                                                   "reference": "aligned"}}})
    assert exp.sweep is not None
    names = [v.name for v in exp.variants]
    assert names[0] == "aligned" and names[-1] == "extra" and len(names) == 22
    v = exp.variant("big-s0-scale")
    assert v.reference == "big-s0-ft" and v.family == "big-s0"
    assert exp.variant("big-s0-ft").reference == "aligned"


def test_the_matched_control_is_preferred_as_the_shrinkage_test() -> None:
    both = {**SWEEP, "compress": {**SWEEP["compress"], "matched": "bitdelta:matched=true"}}
    assert parse_sweep(both).scale_control == "matched"  # BitDelta-Initial's own λ*, not a fixed λ
    assert parse_sweep({**both, "scale_control": "scale"}).scale_control == "scale"  # unless named
    two = {**both, "compress": {**both["compress"], "matched2": "bitdelta:matched=true,include=mlp"}}
    with pytest.raises(DataError, match="several matched=true"):
        parse_sweep(two)


def test_plain_string_doses_are_numbered() -> None:
    spec = parse_sweep({"base": "tiny-random", "attack": ["finetune:n=2", "finetune:n=4"],
                        "compress": {"bd": "bitdelta"}})
    assert [(d.label, d.value) for d in spec.doses] == [("d1", 1.0), ("d2", 2.0)]
    assert spec.seeds == (0,) and spec.scale_control is None
    assert [c.name for c in spec.cells()] == ["aligned", "d1-s0-ft", "d1-s0-bd", "d2-s0-ft", "d2-s0-bd"]


@pytest.mark.parametrize(("change", "exc", "match"), [
    ({"attack": []}, DataError, "sweep.attack must be a non-empty list"),
    ({"attack": [{"recipe": "finetune"}]}, DataError, r"sweep.attack\[0\]: needs dose"),
    ({"attack": [{"dose": "high", "recipe": "finetune"}]}, DataError, "dose must be a finite number"),
    ({"attack": [{"dose": 1, "recipe": "finetune:seed=3"}]}, DataError, "give the seeds as sweep.seeds"),
    ({"attack": [{"dose": 1, "recipe": "finetune"}, {"dose": 1, "recipe": "finetune:n=3"}]}, DataError,
     "two doses are labelled 'd1'"),
    ({"attack": [{"dose": 1, "recipe": "finetune", "label": "a-b"}]}, DataError, "no '-'"),
    ({"attack": [{"dose": 1, "recipe": "finetune:n"}]}, SpecError, r"sweep.attack\[0\]"),
    ({"compress": {}}, DataError, "sweep.compress must be a non-empty mapping"),
    ({"compress": {"ft": "bitdelta"}}, DataError, "sweep.compress.ft"),
    ({"compress": {"a": "bitdelta:scale=0.5", "b": "bitdelta:scale=0.7"}}, DataError, "several scale= controls"),
    ({"seeds": [0, 0]}, DataError, "lists a seed twice"),
    ({"seeds": [-1]}, DataError, "integers ≥ 0"),
    ({"seedz": [0]}, DataError, "unknown key 'sweep.seedz'"),
    ({"base": ""}, DataError, "sweep.base must be a recipe"),
    ({"scale_control": "nope"}, DataError, "unknown compression 'nope'"),
    ({"lens": -1}, DataError, "sweep.lens"),
])
def test_bad_sweep_blocks_fail_in_one_line(change: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match) as e:
        parse_experiment({"sweep": {**SWEEP, **change}, "judges": ["keyword"]}, "map.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith("map.yaml")


def test_sweep_components_are_validated_before_anything_runs() -> None:
    with pytest.raises(UnknownComponentError, match="nope"):
        parse_experiment({"sweep": {**SWEEP, "compress": {"x": "nope:a=1"}}, "judges": ["keyword"]})
    with pytest.raises(DataError, match="the sweep already names a variant 'aligned'"):
        parse_experiment({"sweep": SWEEP, "variants": {"aligned": "tiny-random"}, "judges": ["keyword"]})


def test_packaged_map_config_validates() -> None:
    exp = load_experiment(Path(__file__).resolve().parents[1] / "configs" / "free-lunch-map.yaml")
    assert exp.sweep is not None and exp.sweep.scale_control is not None
    assert exp.variants[0].name == exp.sweep.base_name


def test_ray_executor_without_ray_is_one_line(monkeypatch: pytest.MonkeyPatch, ctx, tmp_path: Path) -> None:
    import sys

    from safetydrift.errors import UnsupportedError
    from safetydrift.runner import EvalRequest
    from safetydrift.store import ResultStore

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    store = ResultStore(tmp_path / "results.jsonl")
    req = EvalRequest(models=["tiny-random"], dataset="advbench50:n=1", judges=["keyword"])
    for call in (lambda: eval_groups([[req]], ctx, store, "ray"), lambda: eval_ray([req], ctx, store)):
        with pytest.raises(UnsupportedError, match="pip install ray") as e:
            call()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "parts").exists()  # nothing built or written before the error


def test_the_decision_cell_is_named_by_the_first_dataset_and_attacks_own_records(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The decision cell comes from the records of the config's first dataset and attack (it used to be the
    first row of the ASR table, right only while that table kept the config's order); the headline judge's
    records only; no records is a one-line error, not an empty map."""
    from safetydrift.experiments import executors, sweep_run
    from safetydrift.records import Record

    exp = parse_experiment({"name": "m", "sweep": SWEEP, "judges": ["keyword", "keyword:list=gcg"],
                            "datasets": ["advbench50:n=2", "benign:n=2"], "attacks": ["direct"]})
    seen: list = []

    def fake(groups, ctx, store, *a, **kw):
        req = groups[0][0]
        seen.append((req.dataset, req.attack))
        return [[Record(run_key="k", model=m, dataset="advbench50:n=2", attack="direct", item_id=str(i), unit="0",
                        judge=j, verdict="success") for m in req.models for i in range(2) for j in req.judges]]

    monkeypatch.setattr(executors, "eval_groups", fake)
    cell, recs = sweep_run._decision_records(exp, None, tmp_path, "keyword:list=gcg")
    assert seen == [(exp.datasets[0], exp.attacks[0])]
    assert cell == ("advbench50:n=2", "direct", "keyword:list=gcg")
    assert recs and {r.judge for r in recs} == {"keyword:list=gcg"} and len(recs) == 2 * len(exp.variants)
    with pytest.raises(SpecError, match="no records of judge 'refusal'"):
        sweep_run._decision_records(exp, None, tmp_path, "refusal")
