"""End to end through the CLI on a tiny random model: outputs, resume, kill -9, escaping, error paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def test_eval_writes_contract_files(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("eval", "--model", "tiny-random", "--dataset", "advbench50", "--limit", "4",
                "--max-new-tokens", "4", "--judge", "keyword", "--judge", "keyword:list=gcg", "--out", str(out),
                cache=cache_dir)
    assert r.returncode == 0, r.stderr
    recs = _lines(out / "results.jsonl")
    assert len(recs) == 8  # 4 items × 2 judges
    for k in ("model", "item_id", "prompt", "response", "judge", "verdict", "model_sha256", "dataset_sha256",
              "gen", "seed", "libraries"):
        assert k in recs[0]
    summary = json.loads((out / "summary.json").read_text())
    m = summary["models"]["tiny-random"]
    for k in ("n", "successes", "unscorable", "asr", "ci_low", "ci_high", "by_category"):
        assert k in m
    assert m["n"] + m["unscorable"] == 4
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    assert "attack success rate" in r.stdout

    # the same command again generates nothing new
    r2 = run_cli("eval", "--model", "tiny-random", "--dataset", "advbench50", "--limit", "4",
                 "--max-new-tokens", "4", "--judge", "keyword", "--judge", "keyword:list=gcg", "--out", str(out),
                 cache=cache_dir)
    assert r2.returncode == 0
    assert "4 already done" in r2.stderr
    assert len(_lines(out / "results.jsonl")) == 8


def test_a_version_1_results_file_resumes(tmp_path: Path, cache_dir: Path) -> None:
    """results.jsonl written before records were versioned (tests/data/v1): the same command finds every
    sample done (tiny-random is rebuilt bit for bit, so the run key is the same) and generates nothing."""
    import shutil

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "v1" / "eval" / "results.jsonl", out / "results.jsonl")
    old = (out / "results.jsonl").read_text()
    r = run_cli("eval", "--model", "tiny-random", "--dataset", "advbench50:n=4", "--max-new-tokens", "4",
                "--judge", "keyword", "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    assert "4 units, 4 already done" in r.stderr and "generating" not in r.stderr
    assert (out / "results.jsonl").read_text() == old  # nothing generated, nothing rewritten
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == 2 and summary["models"]["tiny-random"]["n"] == 4
    # a new judge re-judges the stored answers (no generation) and appends version-2 records
    r = run_cli("eval", "--model", "tiny-random", "--dataset", "advbench50:n=4", "--max-new-tokens", "4",
                "--judge", "keyword", "--judge", "keyword:list=gcg", "--out", str(out), cache=cache_dir)
    assert r.returncode == 0, r.stderr
    assert "generating" not in r.stderr
    recs = _lines(out / "results.jsonl")
    assert len(recs) == 8 and [x.get("schema") for x in recs] == [None] * 4 + [2] * 4
    assert {x["item_id"]: x["response"] for x in recs[4:]} == {x["item_id"]: x["response"] for x in recs[:4]}


def test_script_tag_is_escaped_in_report(tmp_path: Path, cache_dir: Path) -> None:
    data = tmp_path / "xss.csv"
    data.write_text('prompt,category\n"<script>alert(1)</script> please",<b>cat</b>\n')
    out = tmp_path / "out"
    r = run_cli("eval", "--model", "tiny-random", "--dataset", str(data), "--max-new-tokens", "4", "--out", str(out),
                cache=cache_dir)
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>cat</b>" not in html


def test_kill_9_then_resume_exactly_one_record_per_item(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    args = ["eval", "--model", "tiny-random", "--dataset", "advbench", "--limit", "120", "--max-new-tokens", "24",
            "--backend", "transformers:batch=2", "--judge", "keyword", "--out", str(out)]
    env = dict(os.environ, SAFETYDRIFT_CACHE=str(cache_dir))
    proc = subprocess.Popen([sys.executable, "-m", "safetydrift", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if results.exists() and len(results.read_bytes().splitlines()) >= 10:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "eval finished before it could be killed: make the run longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_lines(results)) if results.read_text().endswith("\n") else None
    assert n_before is None or n_before < 120
    r = run_cli(*args, cache=cache_dir)
    assert r.returncode == 0, r.stderr
    recs = _lines(results)
    ids = [x["item_id"] for x in recs]
    assert len(ids) == 120 and len(set(ids)) == 120


def test_error_paths_are_one_line_exit_2(tmp_path: Path, cache_dir: Path) -> None:
    cases = [
        (["eval", "--model", "tiny-random", "--dataset", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o1")],
         "not found"),
        (["eval", "--model", "no-such-model", "--dataset", "advbench50", "--out", str(tmp_path / "o2")],
         "unknown model source 'no-such-model'"),
        (["eval", "--model", "tiny-random>no-such-transform", "--dataset", "advbench50", "--out", str(tmp_path / "o3")],
         "unknown transform 'no-such-transform'"),
        (["eval", "--model", "tiny-random", "--dataset", "advbench50", "--judge", "keyword:list=nope",
          "--out", str(tmp_path / "o4")], "unknown list"),
        (["eval", "--model", "tiny-random", "--dataset", "advbench50", "--attack", "nope", "--out", str(tmp_path / "o5")],
         "unknown attack 'nope'"),
        (["eval", "--model", "hf:" + str(tmp_path / "nodir"), "--dataset", "advbench50", "--out", str(tmp_path / "o6")],
         "not found"),
        (["eval", "--model", "tiny-random:layers=x", "--dataset", "advbench50", "--out", str(tmp_path / "o7")],
         "layers=x"),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    cases.append((["eval", "--model", "tiny-random", "--dataset", str(bad), "--out", str(tmp_path / "o8")],
                  "bad.jsonl:2: malformed JSON"))
    for args, msg in cases:
        r = run_cli(*args, cache=cache_dir)
        assert r.returncode == 2, (args, r.stderr)
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        assert len(lines) == 1 and msg in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
        out = Path(args[args.index("--out") + 1])
        assert not (out / "results.jsonl").exists(), args


def test_model_that_will_not_load(tmp_path: Path, cache_dir: Path) -> None:
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    (d / "model.safetensors").write_bytes(b"garbage")
    r = run_cli("eval", "--model", f"hf:{d}", "--dataset", "advbench50", "--limit", "2", "--out", str(tmp_path / "o"),
                cache=cache_dir)
    assert r.returncode == 2, r.stderr
    assert "cannot load model" in r.stderr and "Traceback" not in r.stderr


def test_listing_commands(cache_dir: Path) -> None:
    for cmd, expect in (("models", "smollm2-135m-instruct"), ("datasets", "advbench50"), ("judges", "keyword"),
                        ("attacks", "direct"), ("transforms", "finetune"), ("backends", "transformers")):
        r = run_cli(cmd, cache=cache_dir)
        assert r.returncode == 0 and expect in r.stdout, (cmd, r.stderr)
