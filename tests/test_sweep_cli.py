"""`safetydrift sweep` end to end on tiny random models: cells, resume, the experiment report, the map's page."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import run_cli

FT = "finetune:data=harmful,epochs=1,batch=4,max_len=256"
EXP = {
    "name": "tiny-map",
    "generation": {"max_new_tokens": 4, "seed": 0},
    "sweep": {
        "base": "tiny-random",
        "attack": [{"dose": 4, "recipe": FT + ",n=4"}, {"dose": 8, "recipe": FT + ",n=8"}],
        "compress": {"bdi": "bitdelta:heal=false", "scale": "bitdelta:scale=0.7",
                     "rest-ref": "bitdelta:heal=false,rest=ref"},
        "seeds": [0],
        "lens": 2,
    },
    "datasets": ["advbench50:n=6"],
    "attacks": ["direct"],
    "judges": ["keyword", "keyword:list=gcg"],
    "utility": {"benign_task": 3, "benign": 3, "task_tokens": 3, "benign_tokens": 3, "ppl_texts": 2, "mc": 4},
}
NAMES = ["aligned", "d4-s0-ft", "d4-s0-bdi", "d4-s0-scale", "d4-s0-rest-ref",
         "d8-s0-ft", "d8-s0-bdi", "d8-s0-scale", "d8-s0-rest-ref"]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_sweep_end_to_end_with_resume(tmp_path: Path, cache_dir: Path) -> None:
    cfg = tmp_path / "map.yaml"
    cfg.write_text(yaml.safe_dump(EXP, sort_keys=False))
    out = tmp_path / "out"
    r = run_cli("sweep", str(cfg), "--out", str(out), cache=cache_dir, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "free-lunch map" in r.stdout and "shrinkage only" in r.stdout  # the rules are printed

    exp = json.loads((out / "experiment.json").read_text())
    assert [v["name"] for v in exp["variants"]] == NAMES
    refs = {v["name"]: v["reference"] for v in exp["variants"]}
    assert refs["d8-s0-ft"] == "aligned" and refs["d8-s0-scale"] == "d8-s0-ft"
    assert {(c["variant"], c["reference"]) for c in exp["comparisons"]} == {
        (n, refs[n]) for n in NAMES[1:]}
    assert all(c["p_holm"] >= c["p_exact"] for c in exp["comparisons"])  # one Holm family over the map
    util = {u["variant"]: u for u in exp["utility"]}
    assert util["d4-s0-bdi"]["refusal_margin"] is not None and util["d4-s0-bdi"]["mc_n"] == 4

    sweep = json.loads((out / "sweep.json").read_text())
    cells = {c["name"]: c for c in sweep["cells"]}
    assert set(cells) == {n for n in NAMES if n != "aligned" and not n.endswith("-ft")}
    assert sweep["decision_cell"][2] == "keyword" and len(sweep["rules_text"]) == 5
    for c in cells.values():
        assert c["rule"] in {"free lunch", "shrinkage only", "rest artefact", "none", "control"} and c["why"]
        assert (c["rule"] == "control") == c["name"].endswith("-scale")  # the control is shown, never graded
        assert c["asr_x"] is not None and c["asr_ft"] is not None and c["p_holm"] is not None
        assert c["other_judges"] and "keyword:list=gcg" in c["other_judges"]
        assert c["kl_harmful"] is not None and c["kl_harmful"] > -1e-6  # KL, up to rounding
        assert c["size_bytes"]
    assert cells["d4-s0-rest-ref"]["rest_ref"] and cells["d4-s0-rest-ref"]["twin"] == "d4-s0-bdi"
    assert cells["d4-s0-scale"]["is_scale_control"] and cells["d4-s0-scale"]["control"] == "scale"
    # R follows from the run's own margins
    m = {n: util[n]["refusal_margin"] for n in ("aligned", "d4-s0-ft", "d4-s0-bdi")}
    if util["d4-s0-bdi"]["margin_meta"]["retention"] == "established":
        want = (m["d4-s0-bdi"] - m["aligned"]) / (m["d4-s0-ft"] - m["aligned"])
        assert abs(cells["d4-s0-bdi"]["r"] - want) < 1e-9
        assert abs(util["d4-s0-bdi"]["margin_retention"] - want) < 1e-9  # R is on the utility row too
        lo, hi = cells["d4-s0-bdi"]["r_ci"]
        assert lo <= want <= hi
    else:  # the fine-tune's margin shift is not clear of 0 on 6 prompts: R is not established, never guessed
        assert util["d4-s0-bdi"]["margin_meta"]["retention"].startswith("not established")
        assert cells["d4-s0-bdi"]["r"] is None and "margin_retention" not in util["d4-s0-bdi"]
    assert "margin_retention" not in util["aligned"] and "margin_retention" not in util["d4-s0-ft"]
    html = (out / "sweep.html").read_text()
    assert "Decision rules" in html and "d8-s0-rest-ref" in html and "data:image/png;base64," in html
    for fig in ("sweep_asr_dose", "sweep_r_dose", "sweep_frontier"):
        assert (out / "figures" / f"{fig}.png").is_file(), fig
    assert _lines(out / "tables" / "sweep_cells.csv")[0].startswith("name,dose,")
    assert 'href="sweep.html"' in (out / "report.html").read_text()  # the experiment page links the map's

    # resume: every cell is in the ledger and the store, so nothing is generated again
    n_records = len(_lines(out / "results.jsonl"))
    ledger = _lines(out / "sweep" / "cells.jsonl")
    assert [json.loads(x)["cell"] for x in ledger] == NAMES
    r2 = run_cli("sweep", str(cfg), "--out", str(out), cache=cache_dir, timeout=1800)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert len(_lines(out / "results.jsonl")) == n_records
    assert "9 cells, 9 already done" in r2.stdout + r2.stderr
    runs = [json.loads(x) for x in _lines(out / "sweep" / "runs.jsonl")]
    assert [r["cells_run"] for r in runs] == [9, 0] and runs[1]["cells_skipped"] == 9
    assert all(r["seconds"]["wall"] >= r["seconds"]["cells"] >= 0 for r in runs)
    assert all(isinstance(json.loads(x)["seconds"], float) for x in ledger)
    # the re-run looks every reading up (experiments/readings.py): no model is read again
    assert all(u["mc_meta"].get("memo") for u in json.loads((out / "experiment.json").read_text())["utility"])
    assert json.loads((out / "sweep.json").read_text())["cells"] == sweep["cells"]

    # an interrupted run: the last cell never finished (no ledger line, its records lost). The next run
    # runs that cell only, and generates only its answers.
    last = json.loads(ledger[-1])
    recipe = next(v["recipe"] for v in exp["variants"] if v["name"] == last["cell"])
    kept = [x for x in _lines(out / "results.jsonl") if json.loads(x)["model"] != recipe]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    (out / "sweep" / "cells.jsonl").write_text("\n".join(ledger[:-1]) + "\n")
    r3 = run_cli("sweep", str(cfg), "--out", str(out), cache=cache_dir, timeout=1800)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert "9 cells, 8 already done" in r3.stdout + r3.stderr
    after = [json.loads(x) for x in _lines(out / "results.jsonl")]
    assert len(after) == n_records
    assert {x["model"] for x in after[len(kept):]} == {recipe}  # only the interrupted cell was generated
