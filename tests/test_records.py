"""Typed records: files written before the formats were versioned (tests/data/v1) load, round-trip, and
give the same numbers when analysed again; what is not readable is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safetydrift.errors import DataError
from safetydrift.records import (
    RECORD_SCHEMA,
    RESULT_FORMAT,
    Comparison,
    EvalSummary,
    ExperimentResult,
    Record,
    UtilityRow,
)
from safetydrift.types import GenerationConfig

V1 = Path(__file__).parent / "data" / "v1"


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("path", [V1 / "eval" / "results.jsonl", V1 / "run" / "results.jsonl"])
def test_v1_records_load_and_write_back_the_same_fields(path: Path) -> None:
    for d in _lines(path):
        r = Record.from_json(d)
        assert isinstance(r.gen, GenerationConfig) and r.key == (d["run_key"], d["item_id"], d["unit"], d["judge"])
        out = r.to_json()
        assert out.pop("schema") == RECORD_SCHEMA
        assert list(out.items()) == list(d.items())  # same fields, same order, same values
        assert Record.from_json(r.to_json()) == r


def test_v1_experiment_json_loads_typed() -> None:
    d = json.loads((V1 / "run" / "experiment.json").read_text())
    e = ExperimentResult.from_json(d)
    assert [v.name for v in e.variants] == ["base", "ft"] and e.variant("ft").reference == "base"
    assert all(isinstance(c, Comparison) and isinstance(c.diff_ci, tuple) for c in e.comparisons)
    assert {(c.variant, c.judge) for c in e.comparisons} == {("ft", "keyword"), ("ft", "keyword:list=gcg")}
    assert e.asr[0].by_category["hacking"].n == 1 and e.asr[0].runs is None
    assert isinstance(e.utility[0], UtilityRow) and e.utility[1].kl_to_reference is not None
    assert e.expectations[0].verdict == "does not hold" and e.expectations[0].runner_up is None
    assert e.provenance is not None and e.provenance.generation == GenerationConfig(max_new_tokens=4)
    assert e.provenance.datasets[0] == ("advbench50:n=4", d["provenance"]["datasets"][0][1])
    out = e.to_json()
    assert out.pop("format") == RESULT_FORMAT and out == d  # nothing lost, nothing invented
    assert ExperimentResult.from_json(e.to_json()) == e


@pytest.mark.parametrize("path", [V1 / "eval" / "summary.json", V1 / "run" / "summary.json"])
def test_v1_summary_loads(path: Path) -> None:
    d = json.loads(path.read_text())
    s = EvalSummary.from_json(d)
    assert s.headline("tiny-random").judge == "keyword"
    out = s.to_json()
    assert out.pop("format") == RESULT_FORMAT and out == d


def test_reanalysing_v1_records_gives_the_v1_numbers() -> None:
    """The analysis on typed records reproduces what the untyped code wrote (same records → same numbers)."""
    from safetydrift.expectations import check_expectations
    from safetydrift.experiments import asr_rows, comparisons, judge_agreement, parse_experiment
    from safetydrift.runner import summarize

    exp = parse_experiment(yaml.safe_load((V1 / "run" / "exp.yaml").read_text()), "exp.yaml")
    old = json.loads((V1 / "run" / "experiment.json").read_text())
    records = [Record.from_json(d) for d in _lines(V1 / "run" / "results.jsonl")]
    safety = [r for r in records if r.dataset == "advbench50:n=4"]
    asr = asr_rows(exp, safety)
    assert [a.to_json() for a in asr] == [
        {**a, "model_sha256": r.model_sha256, "dataset_sha256": r.dataset_sha256}
        for a, r in zip(old["asr"], [next(x for x in safety if x.model == a["recipe"]) for a in old["asr"]], strict=True)
    ]
    comps = comparisons(exp, safety)
    assert [c.to_json() for c in comps] == old["comparisons"]
    assert [j.to_json() for j in judge_agreement(safety, exp.judges)] == old["judge_agreement"]
    util = [UtilityRow.from_json(u) for u in old["utility"]]
    checks = check_expectations(exp.expect, exp.variants, asr, comps, util, ("advbench50:n=4", "direct", "keyword"))
    assert [c.to_json() for c in checks] == old["expectations"]
    summary = summarize(safety).to_json()
    want = json.loads((V1 / "run" / "summary.json").read_text())
    assert summary["models"] == want["models"]


@pytest.mark.parametrize(("cls", "patch", "msg"), [
    (Record, {"schema": RECORD_SCHEMA + 1}, "not readable"),
    (Record, {"verdict": "maybe"}, "'maybe' is not one of"),
    (Record, {"extra_field": 1}, "unknown field 'extra_field'"),
    (Record, {"gen": {"max_new_tokens": 4, "beams": 2}}, "generation settings"),
    (ExperimentResult, {"format": RESULT_FORMAT + 1}, "not readable"),
    (ExperimentResult, {"asr": [{"variant": "x"}]}, "AsrRow: missing field"),
])
def test_unreadable_input_is_one_line_error(cls: type, patch: dict, msg: str) -> None:
    src = _lines(V1 / "eval" / "results.jsonl")[0] if cls is Record else json.loads((V1 / "run" / "experiment.json").read_text())
    with pytest.raises(DataError, match=msg):
        cls.from_json({**src, **patch})
    with pytest.raises(DataError, match="expected a JSON object"):
        cls.from_json([1, 2])


def test_missing_required_record_field() -> None:
    d = _lines(V1 / "eval" / "results.jsonl")[0]
    del d["verdict"]
    with pytest.raises(DataError, match="missing field 'verdict'"):
        Record.from_json(d)


def test_run_provenance_names_the_code_that_ran(tmp_path: Path) -> None:
    """experiment.json carries the git commit of the source that ran (and whether it had local changes); a file
    written before the field existed still loads, with no code named."""
    import subprocess

    import safetydrift.provenance
    from safetydrift.provenance import code_version
    from safetydrift.records import RunProvenance

    base = {"libraries": {"python": "3"}, "started": "s", "finished": "f", "cache_dir": "c",
            "generation": {"max_new_tokens": 4}, "timings_s": {}, "datasets": []}
    old = RunProvenance.from_json(base)
    assert old.code is None and "code" not in old.to_json()
    new = RunProvenance.from_json({**base, "code": {"commit": "ab" * 20, "dirty": False}})
    assert RunProvenance.from_json(new.to_json()) == new and new.to_json()["code"]["commit"] == "ab" * 20
    src = Path(__file__).resolve().parents[1] / "src" / "safetydrift"
    git = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    got = code_version()
    if git.returncode == 0 and Path(safetydrift.provenance.__file__).resolve().is_relative_to(src):
        assert got is not None and got["commit"] == git.stdout.strip() and isinstance(got["dirty"], bool)
    else:  # not a checkout (or the package runs from elsewhere): nothing is claimed
        assert got is None or len(got["commit"]) == 40


def test_code_version_names_only_a_checkout_of_its_own_source(tmp_path: Path) -> None:
    """A copy of the package inside someone else's repository (a wheel in a project's .venv) names no commit;
    once its file is tracked there, the commit is named, and an edit marks it dirty."""
    import importlib.util
    import shutil
    import subprocess

    import safetydrift.provenance

    repo = tmp_path / "project"
    pkg = repo / ".venv" / "safetydrift"
    pkg.mkdir(parents=True)
    shutil.copy(safetydrift.provenance.__file__, pkg / "provenance.py")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README").write_text("x")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)

    def load() -> object:
        spec = importlib.util.spec_from_file_location(f"prov{len(list(tmp_path.iterdir()))}", pkg / "provenance.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.code_version()

    assert load() is None  # the enclosing repository's HEAD is not this code's commit
    subprocess.run([*git, "add", ".venv/safetydrift/provenance.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "y"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert load() == {"commit": head, "dirty": False}
    (pkg / "provenance.py").write_text((pkg / "provenance.py").read_text() + "\n# edited\n")
    assert load() == {"commit": head, "dirty": True}
