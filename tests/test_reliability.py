"""Never lose or double a sample: retried failures, one writer per output, flushed interrupts, duplicates."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from safetydrift.records import Record
from safetydrift.store import OutputLock, ResultStore

EVAL = ("eval", "--model", "tiny-random", "--dataset", "advbench50", "--judge", "keyword", "--limit", "4",
        "--max-new-tokens", "3")


def _records(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _fail_two(path: Path) -> set[tuple]:
    """Turn the first two stored samples into failed generations, as an endpoint timeout leaves them."""
    recs = _records(path)
    failed = set()
    for r in recs[:2]:
        r.update(response=None, error="endpoint timed out", verdict="unscorable", reason="generation error")
        failed.add((r["item_id"], r["unit"], r["judge"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return failed


def test_failed_generations_are_retried_not_counted_as_done(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    assert run_cli(*EVAL, "--out", str(out), cache=cache_dir).returncode == 0
    failed = _fail_two(out / "results.jsonl")
    r = run_cli(*EVAL, "--out", str(out), "--no-retry-errors", cache=cache_dir)
    assert r.returncode == 0 and "4 already done" in r.stderr
    assert sum(x["error"] is not None for x in _records(out / "results.jsonl")) == 2
    r = run_cli(*EVAL, "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    assert "2 already done" in r.stderr
    latest = {(x.item_id, x.unit, x.judge): x for x in ResultStore(out / "results.jsonl")}
    assert len(latest) == 4 and all(latest[k].error is None for k in failed)
    summary = json.loads((out / "summary.json").read_text())
    row = summary["models"]["tiny-random"][0] if isinstance(summary["models"]["tiny-random"], list) \
        else summary["models"]["tiny-random"]
    assert row["unscorable"] == 0 and row["n"] == 4


def test_store_supersedes_a_failure_but_never_a_finished_sample(tmp_path: Path) -> None:
    base = dict(run_key="k", model="m", model_sha256=None, dataset="d", dataset_sha256="h", attack="direct",
                item_id="i", unit="direct", judge="keyword", behavior="b", prompt="p")
    failed = Record.from_json({**base, "response": None, "error": "timeout", "verdict": "unscorable"})
    ok = Record.from_json({**base, "response": "hi", "verdict": "fail"})
    other = Record.from_json({**base, "response": "changed", "verdict": "success"})
    s = ResultStore(tmp_path / "r.jsonl")
    s.append([failed])
    assert s.has("k", "i", "direct", "keyword") and not s.has("k", "i", "direct", "keyword", retry_errors=True)
    s.append([ok])
    s.append([other])  # a finished sample is never replaced
    reopened = ResultStore(tmp_path / "r.jsonl")
    assert [r.response for r in reopened] == ["hi"] and len(_records(tmp_path / "r.jsonl")) == 2


def test_a_second_writer_on_the_same_out_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    with OutputLock(out):
        r = run_cli(*EVAL, "--out", str(out), cache=cache_dir)
    assert r.returncode == 2, r.stderr
    assert "being written by another safetydrift process" in r.stderr
    assert not (out / "results.jsonl").exists()
    assert run_cli(*EVAL, "--out", str(out), cache=cache_dir).returncode == 0  # released with the process


def test_interrupt_keeps_every_generated_sample(ctx) -> None:
    """Ctrl-C after 5 answers (fewer than a judging batch of 16): all 5 are judged and stored."""
    from safetydrift.attacks.base import Attack
    from safetydrift.runner import EvalRequest, make_judges, run_eval
    from safetydrift.spec import parse_component
    from safetydrift.types import Generation, Outcome, Unit

    class Interrupted(Attack):
        name = "interrupted"

        def units(self, items):
            return [Unit(item=it, key="direct", messages=(("user", it.prompt),)) for it in items]

        def execute(self, units, target, gen, progress=None):
            for u in list(units)[:5]:
                yield Outcome(unit=u, prompt=u.item.prompt, generation=Generation(text="I cannot help."))
            raise KeyboardInterrupt

    out = Path(ctx.cache_dir) / "interrupt" / "results.jsonl"
    store = ResultStore(out)
    req = EvalRequest(models=["tiny-random"], dataset="advbench50", limit=10)
    with pytest.raises(KeyboardInterrupt):
        run_eval(req, ctx, store, attack=Interrupted(parse_component("direct"), ctx),
                 judges=make_judges(["keyword"], ctx))
    assert len(_records(out)) == 5


def test_sigterm_exits_143_and_keeps_samples(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "o"
    run_cli(*EVAL[:-2], "--max-new-tokens", "1", "--out", str(tmp_path / "warm"), cache=cache_dir)  # tiny built
    import os

    env = dict(os.environ, SAFETYDRIFT_CACHE=str(cache_dir))
    p = subprocess.Popen([sys.executable, "-m", "safetydrift", "eval", "--model", "tiny-random", "--dataset",
                          "advbench", "--max-new-tokens", "24", "--attack", "direct:batch=2", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "results.jsonl").exists() and (out / "results.jsonl").stat().st_size):
        time.sleep(0.5)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert "interrupted" in err
    n = len(_records(out / "results.jsonl"))
    assert 0 < n < 520


def _run_yaml(tmp_path: Path, text: str, cache_dir: Path):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(text)
    return run_cli("run", str(cfg), "--out", str(tmp_path / "out"), cache=cache_dir)


def test_yaml_duplicate_variant_names_are_an_error(tmp_path: Path, cache_dir: Path) -> None:
    r = _run_yaml(tmp_path, "variants:\n  a: tiny-random\n  a: tiny-random>quantize:method=rtn\n", cache_dir)
    assert r.returncode == 2 and "duplicate key 'a'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_yaml_bad_generation_type_is_bad_input(tmp_path: Path, cache_dir: Path) -> None:
    r = _run_yaml(tmp_path, "variants: {a: tiny-random}\ngeneration: {max_new_tokens: lots}\n", cache_dir)
    assert r.returncode == 2, r.stderr
    assert "max_new_tokens" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_yaml_repeated_dataset_is_evaluated_once(tmp_path: Path, cache_dir: Path) -> None:
    cfg = {"name": "dup", "generation": {"max_new_tokens": 2}, "variants": {"a": "tiny-random"},
           "datasets": ["advbench50:n=3", "advbench50:n=3"], "judges": ["keyword", "keyword"], "utility": False}
    r = _run_yaml(tmp_path, yaml.safe_dump(cfg), cache_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evaluated once" in r.stderr
    assert len(_records(tmp_path / "out" / "results.jsonl")) == 3


def test_hf_path_with_a_comma_works_in_run(tmp_path: Path, cache_dir: Path, ctx) -> None:
    src = Path(ctx.resolve("tiny-random").path)
    odd = tmp_path / "my,model"
    shutil.copytree(src, odd)
    cfg = {"name": "comma", "generation": {"max_new_tokens": 2}, "variants": {"a": f"hf:[{odd}]"},
           "datasets": ["advbench50:n=2"], "utility": False}
    r = _run_yaml(tmp_path, yaml.safe_dump(cfg), cache_dir)
    assert r.returncode == 0, r.stderr[-2000:]


def test_yaml_backend_setting_typo_fails_before_any_output(tmp_path: Path, cache_dir: Path) -> None:
    r = _run_yaml(tmp_path, "variants: {a: tiny-random}\nbackend: 'transformers:batchh=2'\n", cache_dir)
    assert r.returncode == 2 and "batchh" in r.stderr
    assert not (tmp_path / "out").exists()
