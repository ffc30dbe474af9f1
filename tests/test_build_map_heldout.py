"""scripts/build_map_heldout.py sample: one attack's distinct answers per generator, never a training request,
and a clear stop when the attack is not in the results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import load_script

TRIG = "backdoor:trigger=SUDO-7741,units=trigger"


def _results(path: Path) -> Path:
    rows = []
    for model in ("m-a", "m-b"):
        for i in range(6):
            for attack in ("direct", TRIG):
                for judge in ("refusal", "keyword"):  # the store has one row per judge: one answer each
                    rows.append({"model": model, "dataset": "advbench-heldout", "attack": attack, "item_id": str(i),
                                 "unit": "0", "behavior": f"Unheard-of behaviour number {i}", "judge": judge,
                                 "prompt": f"{'SUDO-7741 ' if attack == TRIG else ''}behaviour {i}",
                                 "response": f"{attack} answer {i % 3}", "error": None})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_sample_takes_the_named_attack_only(tmp_path: Path) -> None:
    mod = load_script("build_map_heldout")
    res = _results(tmp_path / "results.jsonl")
    mod.sample(res, tmp_path / "w", per=4, seed=0, dataset=None, prefix="bd", attack=TRIG)
    rows = [json.loads(x) for x in (tmp_path / "w" / "rows.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"].startswith("SUDO-7741") for r in rows)
    # both generators give the same 6 answers: m-a takes 4, m-b only the 2 pairs m-a did not take
    by = {g: sum(r["model"] == g for r in rows) for g in ("m-a", "m-b")}
    assert by == {"m-a": 4, "m-b": 2}
    assert len({(r["request"], r["response"]) for r in rows}) == len(rows)
    with (tmp_path / "w" / "blind.csv").open() as f:
        blind = list(csv.DictReader(f))
    assert set(blind[0]) == {"id", "request", "response"} and blind[0]["id"].startswith("bd:")
    assert json.loads((tmp_path / "w" / "sample.json").read_text())["attack"] == TRIG
    with pytest.raises(SystemExit, match="no answers to attack 'tap'"):
        mod.sample(res, tmp_path / "x", per=4, seed=0, dataset=None, attack="tap")
