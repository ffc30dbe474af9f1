"""Where judges of one semantic read a comparison differently (``stats.judge_disagreements``), how a run
records each judge's semantic, and that the record reads old and new experiment.json files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safetydrift.records import Comparison, ExperimentResult, JudgeDisagreement
from safetydrift.stats import judge_disagreements

V1 = Path(__file__).parent / "data" / "v1" / "run"
SEM = {"kw": "refusal", "clf": "refusal", "hb": "harm", "lg": "harm"}


def comp(judge: str, diff: float, p_holm: float | None, **kw: Any) -> Comparison:
    base: dict[str, Any] = {
        "variant": "ft", "reference": "base", "dataset": "d", "attack": "direct", "judge": judge, "n_pairs": 20,
        "n_items": 20, "test": "mcnemar-exact", "asr_ref": 0.3, "asr_variant": 0.3 + diff, "diff": diff,
        "diff_ci": None, "p_exact": p_holm if p_holm is not None else 1.0, "p_midp": 1.0, "rrr": None,
        "rrr_ci": None, "b01": 0, "b10": 0, "p_holm": p_holm,
    }
    return Comparison(**{**base, **kw})


@pytest.mark.parametrize(("a", "b", "kind"), [
    ((0.10, 0.40), (-0.20, 0.30), "direction"),  # up under one, down under the other, neither significant
    ((0.30, 0.01), (0.05, 0.40), "significance"),  # same direction, significant under one only
    ((0.30, 0.01), (-0.10, 0.50), "both"),
    ((-0.30, 0.001), (0.10, 0.049), "direction"),  # both significant, opposite signs
])
def test_same_semantic_pair_is_flagged(a: tuple[float, float], b: tuple[float, float], kind: str) -> None:
    (d,) = judge_disagreements([comp("kw", *a), comp("clf", *b)], SEM)
    assert d == JudgeDisagreement(variant="ft", reference="base", dataset="d", attack="direct", judge_a="kw",
                                  judge_b="clf", diff_a=a[0], diff_b=b[0], p_a=a[1], p_b=b[1], kind=kind)


@pytest.mark.parametrize(("a", "b"), [
    ((0.30, 0.01), (0.20, 0.02)),  # same direction, both significant
    ((0.10, 0.40), (0.20, 0.60)),  # same direction, neither significant
    ((0.0, 1.0), (0.10, 0.30)),  # no change is neither up nor down
    ((0.30, 0.05), (0.20, 0.06)),  # p == α is not significant: neither is
])
def test_agreeing_judges_are_not_flagged(a: tuple[float, float], b: tuple[float, float]) -> None:
    assert judge_disagreements([comp("kw", *a), comp("clf", *b)], SEM) == []


def test_judges_of_different_semantics_are_never_paired() -> None:
    """A refusal judge and a harm judge measure different things: opposite and differently significant
    changes are not a disagreement, while the same-semantic pairs next to them still are."""
    comps = [comp("kw", 0.30, 0.01), comp("hb", -0.20, 0.50), comp("lg", -0.20, 0.01)]
    got = judge_disagreements(comps, SEM)
    assert [(d.judge_a, d.judge_b, d.kind) for d in got] == [("hb", "lg", "significance")]
    assert judge_disagreements(comps[:2], SEM) == []


def test_a_judge_without_a_declared_semantic_is_never_paired() -> None:
    comps = [comp("kw", 0.30, 0.01), comp("custom", -0.30, 0.01)]
    assert judge_disagreements(comps, {**SEM}) == []
    assert judge_disagreements(comps, {"kw": "refusal", "custom": "refusal"})[0].kind == "direction"


def test_an_unadjusted_p_is_no_evidence_of_a_significance_disagreement() -> None:
    assert judge_disagreements([comp("kw", 0.3, 0.01), comp("clf", 0.2, None)], SEM) == []
    (d,) = judge_disagreements([comp("kw", 0.3, None), comp("clf", -0.2, 0.01)], SEM)
    assert d.kind == "direction" and d.p_a is None


def test_alpha_and_grouping() -> None:
    """Each (variant, reference, dataset, attack) is its own group; pairs follow the judges' order in
    ``semantics``; α is the caller's."""
    comps = [
        comp("clf", 0.05, 0.04), comp("kw", 0.30, 0.001),
        comp("clf", 0.30, 0.01, attack="tap"), comp("kw", 0.25, 0.02, attack="tap"),
        comp("kw", 0.30, 0.01, variant="q4"),  # q4 has one judge only: nothing to compare
        comp("clf", -0.30, 0.01, reference="other"),  # another reference: another group
    ]
    assert [(d.attack, d.judge_a, d.judge_b) for d in judge_disagreements(comps, SEM)] == []
    got = judge_disagreements(comps, SEM, alpha=0.015)
    assert [(d.variant, d.attack, d.judge_a, d.judge_b, d.kind) for d in got] == [
        ("ft", "direct", "kw", "clf", "significance"), ("ft", "tap", "kw", "clf", "significance")]


def test_record_round_trip_and_old_files() -> None:
    d = JudgeDisagreement(variant="ft", reference="base", dataset="d", attack="direct", judge_a="kw",
                          judge_b="clf", diff_a=0.3, diff_b=-0.1, p_a=0.01, p_b=None, kind="both")
    assert JudgeDisagreement.from_json(d.to_json()) == d
    r = ExperimentResult(name="x", judge_disagreements=(d,), judge_semantics={"kw": "refusal", "clf": "refusal"},
                         headline_judge="kw")
    assert ExperimentResult.from_json(json.loads(json.dumps(r.to_json()))) == r
    # an old experiment.json: direction_flips loads, the new fields are "not recorded", nothing is invented
    old = json.loads((V1 / "experiment.json").read_text())
    e = ExperimentResult.from_json(old)
    assert e.judge_disagreements == () and e.judge_semantics is None and e.headline_judge is None
    assert e.direction_flips == () and "direction_flips" in old
    out = e.to_json()
    assert not {"judge_disagreements", "judge_semantics", "headline_judge"} & set(out)
    flips = {**old, "direction_flips": [{"variant": "ft", "reference": "base", "dataset": "d", "attack": "a",
                                         "diffs": {"keyword": 0.1, "keyword:list=gcg": -0.1}}]}
    assert ExperimentResult.from_json(flips).direction_flips[0].diffs["keyword"] == 0.1


def test_a_run_records_each_judges_semantic_without_building_it() -> None:
    from safetydrift.experiments import parse_experiment
    from safetydrift.experiments.run import judge_semantics

    exp = parse_experiment({"variants": {"a": "tiny-random"}, "judges": ["keyword", "exact-match", "keyword:list=gcg"]})
    names = {j: j for j in exp.judges}
    got = judge_semantics(exp, names)
    assert got == {"keyword": "refusal", "exact-match": "task", "keyword:list=gcg": "refusal"}
    assert list(got) == ["keyword", "exact-match", "keyword:list=gcg"]  # the YAML's order
