"""The CLI's contract on hostile or careless input: one line, exit 2, nothing half-written, nothing doubled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_cli

EVAL = ("eval", "--dataset", "advbench50", "--limit", "2", "--max-new-tokens", "2")


def test_out_pointing_to_a_file_is_bad_input(tmp_path: Path, cache_dir: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    r = run_cli(*EVAL, "--model", "tiny-random", "--out", str(f), cache=cache_dir)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not a directory" in r.stderr
    assert f.read_text() == "x"


def test_repeated_model_and_judge_are_evaluated_once(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    r = run_cli(*EVAL, "--model", "tiny-random", "--model", "tiny-random", "--judge", "keyword", "--judge", "keyword",
                "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    assert "repeats a value" in r.stderr
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert len(recs) == 2  # 2 items × 1 model × 1 judge


def test_backend_setting_typo_fails_before_any_output(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    r = run_cli(*EVAL, "--model", "tiny-random", "--backend", "transformers:batchh=4", "--out", str(out),
                cache=cache_dir)
    assert r.returncode == 2, r.stderr
    assert "batchh" in r.stderr
    assert not out.exists()


def test_pickle_checkpoint_is_refused_before_any_output(tmp_path: Path, cache_dir: Path, ctx) -> None:
    src = Path(ctx.resolve("tiny-random").path)
    pkl = tmp_path / "pickled"
    shutil.copytree(src, pkl)
    (pkl / "model.safetensors").unlink()
    (pkl / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    out = tmp_path / "o"
    r = run_cli(*EVAL, "--model", f"hf:{pkl}", "--out", str(out), cache=cache_dir)
    assert r.returncode == 2, r.stderr
    assert "pickle" in r.stderr
    assert not out.exists()


def test_summary_names_variants_by_their_distinguishing_tail(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    a, b = "tiny-random>quantize:method=rtn,bits=8", "tiny-random>quantize:method=rtn,bits=4"
    r = run_cli(*EVAL, "--model", a, "--model", b, "--out", str(out), cache=cache_dir, env={"COLUMNS": "40"})
    assert r.returncode == 0, r.stderr
    assert "…>quantize:bits=8,method=rtn" in r.stdout or "…>quantize:method=rtn,bits=8" in r.stdout, r.stdout
    assert "…>quantize:bits=4,method=rtn" in r.stdout or "…>quantize:method=rtn,bits=4" in r.stdout, r.stdout


def test_without_a_judge_the_refusal_card_leads_and_keyword_sits_beside_it(tmp_path: Path, cache_dir: Path) -> None:
    """The default judges (issue: readings you can trust): the validated offline ``refusal`` card first, then
    ``keyword``; an experiment YAML without ``judges:`` gets the same list."""
    from safetydrift.experiments.schema import parse_experiment
    from safetydrift.judges.base import DEFAULT_JUDGES

    assert DEFAULT_JUDGES == ("refusal", "keyword")
    out = tmp_path / "o"
    r = run_cli(*EVAL, "--model", "tiny-random", "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert sorted({x["judge"] for x in recs}) == ["keyword", "refusal"] and len(recs) == 4
    exp = parse_experiment({"name": "x", "variants": {"m": "tiny-random"}, "datasets": ["advbench50"]}, "inline")
    assert exp.judges == list(DEFAULT_JUDGES)
