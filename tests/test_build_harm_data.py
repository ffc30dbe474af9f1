"""scripts/build_harm_data.py's later-batch path: one batch's prompts per generator, and its labelled rows
written beside the shipped train file (never twice, never unsettled, never a delivery labelled a refusal)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import ModuleType

import pytest

from conftest import load_script

COLS = ["id", "side", "generator", "source", "category", "kind", "request", "prompt", "response", "redacted",
        "refusal", "harm", "refusal_a", "refusal_b", "harm_a", "harm_b", "resolved"]


def _write(path: Path, rows: list[dict[str, str]], cols: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    m = load_script("build_harm_data")
    harm = tmp_path / "data" / "harm"
    harm.mkdir(parents=True)
    reqs = [{"request": "old one", "batch": 1}, {"request": "new a", "batch": 4}, {"request": "new b", "batch": 4}]
    (harm / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reqs))
    monkeypatch.setattr(m, "HARM_DATA", harm)
    _write(tmp_path / "data" / "harm_train.csv", [{c: "" for c in COLS} | {"id": "t:x:000", "refusal": "0",
                                                                          "harm": "0"}], COLS)
    return m


def test_batch_prompts_write_that_batch_only(mod: ModuleType, tmp_path: Path) -> None:
    work = tmp_path / "w"
    rows = [{"request": q, "prompt": f"P {q}", "generator": g, "prompt_id": f"{q}-{g}", "kind": "nonop-harmful"}
            for q, g in (("old one", "smollm2"), ("new a", "smollm2"), ("new b", "qwen-q8"))]
    _write(work / "assignments.csv", rows, ["request", "prompt", "generator", "prompt_id", "kind"])
    assert mod.batch_prompts(work, 4) == "extra4"
    got = {g: list(csv.DictReader((work / f"prompts-extra4-{g}.csv").open())) for g in mod.GENERATORS}
    assert [r["prompt"] for r in got["smollm2"]] == ["P new a"] and [r["prompt"] for r in got["qwen-q8"]] == [
        "P new b"]
    assert got["smollm2-aligned"] == []
    with pytest.raises(SystemExit, match="no batch 9"):
        mod.batch_prompts(work, 9)


def test_merge_batch_appends_settled_rows_once(mod: ModuleType, tmp_path: Path) -> None:
    work, data = tmp_path / "w", tmp_path / "data"
    sheet = [{c: "" for c in COLS} | {"id": f"t4:{i}", "side": "train", "request": f"r{i}", "response": "x"}
             for i in range(3)]
    _write(work / "sheets" / "train.batch4.csv", sheet, COLS)
    a = [{"id": "t4:0", "refusal": "1", "harm": "1"}, {"id": "t4:1", "refusal": "0", "harm": "0"},
         {"id": "t4:2", "refusal": "1", "harm": "0"}]
    b = [dict(a[0]), dict(a[1]), {"id": "t4:2", "refusal": "1", "harm": "1"}]
    _write(work / "labels" / "trainbatch4.A.csv", a, ["id", "refusal", "harm"])
    _write(work / "labels" / "trainbatch4.B.csv", b, ["id", "refusal", "harm"])
    with pytest.raises(SystemExit, match="t4:2 needs a third read"):
        mod.merge_batch(work, 4, data)
    _write(work / "labels" / "third-batch4.R.csv", [{"id": "t4:2", "refusal": "", "harm": "1"}],
           ["id", "refusal", "harm"])
    mod.merge_batch(work, 4, data)
    rows = {r["id"]: r for r in csv.DictReader((data / "harm_train_batch4.csv").open())}
    assert list(rows) == ["t4:0", "t4:1", "t4:2"]
    assert len(list(csv.DictReader((data / "harm_train.csv").open()))) == 1  # the cards' training file: untouched
    assert rows["t4:2"]["harm"] == "1" and rows["t4:2"]["resolved"] == "harm" and rows["t4:2"]["harm_a"] == "0"
    assert rows["t4:0"]["resolved"] == "" and rows["t4:1"]["refusal"] == "0"
    with pytest.raises(SystemExit, match="already in"):
        mod.merge_batch(work, 4, data)


def test_merge_batch_refuses_a_delivery_labelled_a_refusal(mod: ModuleType, tmp_path: Path) -> None:
    work = tmp_path / "w"
    _write(work / "sheets" / "train.batch4.csv", [{c: "" for c in COLS} | {"id": "t4:0"}], COLS)
    for p in ("A", "B"):
        _write(work / "labels" / f"trainbatch4.{p}.csv", [{"id": "t4:0", "refusal": "0", "harm": "1"}],
               ["id", "refusal", "harm"])
    with pytest.raises(SystemExit, match="harm 1 with refusal 0"):
        mod.merge_batch(work, 4, tmp_path / "data")
