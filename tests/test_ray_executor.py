"""The Ray executor gives the same records as the local one (greedy decoding, same cache, same specs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra (scripts/setup.sh installs it)")

EXP = {
    "name": "tiny-ray",
    "generation": {"max_new_tokens": 4, "seed": 0},
    "variants": {
        "base": "tiny-random",
        "rtn": {"recipe": "tiny-random>quantize:method=rtn,bits=4,group=32", "reference": "base"},
    },
    "datasets": ["advbench50:n=5"],
    "attacks": ["direct"],
    "judges": ["keyword"],
    "utility": {"benign_task": 3, "benign": 3, "task_tokens": 3, "benign_tokens": 3, "ppl_texts": 0},
}


def _verdicts(out: Path) -> dict[tuple[str, ...], tuple[str, str]]:
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(r["model"], r["dataset"], r["item_id"], r["unit"], r["judge"]): (r["verdict"], r["response"]) for r in recs}


def test_ray_matches_local(tmp_path: Path, cache_dir: Path) -> None:
    outs = {}
    for executor in ("local", "ray"):
        cfg = tmp_path / f"{executor}.yaml"
        cfg.write_text(yaml.safe_dump({**EXP, "executor": executor}, sort_keys=False))
        outs[executor] = tmp_path / executor
        r = run_cli("run", str(cfg), "--out", str(outs[executor]), cache=cache_dir, timeout=900,
                    env={"RAY_ADDRESS": "local"} if executor == "ray" else None)
        assert r.returncode == 0, r.stderr[-3000:]
    local, ray_ = _verdicts(outs["local"]), _verdicts(outs["ray"])
    assert len(local) == 2 * (5 + 3 + 3) and local == ray_
    el, er = (json.loads((outs[k] / "experiment.json").read_text()) for k in ("local", "ray"))
    assert el["asr"] == er["asr"] and el["utility"] == er["utility"]
    assert [c["p_exact"] for c in el["comparisons"]] == [c["p_exact"] for c in er["comparisons"]]
    # each Ray task wrote its own part file; the driver merged them into the one store
    assert sorted(p.name for p in (outs["ray"] / "parts").iterdir())
