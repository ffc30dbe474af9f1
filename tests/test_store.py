from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from safetydrift.errors import DataError
from safetydrift.records import RECORD_SCHEMA, Record
from safetydrift.store import ResultStore

V1 = Path(__file__).parent / "data" / "v1"


def _rec(i: int, judge: str = "keyword") -> Record:
    return Record(run_key="r", model="m", item_id=f"i{i}", unit="direct", judge=judge, verdict="fail")


def _line(i: int) -> str:
    return json.dumps(_rec(i).to_json())


def test_append_and_dedupe(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "r.jsonl")
    s.append([_rec(1), _rec(2)])
    s.append([_rec(1)])  # already there: not written again
    assert len(s) == 2
    s2 = ResultStore(tmp_path / "r.jsonl")
    assert len(s2) == 2 and s2.has("r", "i1", "direct", "keyword")
    assert list(s2) == [_rec(1), _rec(2)]  # what was written is what is read, typed
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    assert all(json.loads(x)["schema"] == RECORD_SCHEMA for x in (tmp_path / "r.jsonl").read_text().splitlines())


def test_find_response_is_the_first_record_of_a_unit(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "r.jsonl")
    s.append([_rec(1, "keyword"), _rec(1, "classifier")])
    found = s.find_response("r", "i1", "direct")
    assert found is not None and found.judge == "keyword"
    assert s.find_response("r", "i9", "direct") is None


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(_line(1) + "\n" + '{"run_key": "r", "item_id": "i2", "un')
    s = ResultStore(p)
    assert len(s) == 1
    assert p.read_text().endswith("\n") and len(p.read_text().splitlines()) == 1
    s.append([_rec(2)])
    assert [json.loads(x)["item_id"] for x in p.read_text().splitlines()] == ["i1", "i2"]


def test_garbage_last_line_with_newline_is_cut(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(_line(1) + "\n{broken\n")
    assert len(ResultStore(p)) == 1


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(_line(1) + "\n{broken\n" + _line(2) + "\n")
    with pytest.raises(DataError, match="r.jsonl:2"):
        ResultStore(p)


@pytest.mark.parametrize(("patch", "msg"), [
    ({"verdict": "maybe"}, "'maybe' is not one of"),
    ({"colour": 1}, "unknown field 'colour'"),
    ({"schema": 99}, "schema 99 is not readable"),
])
def test_a_bad_record_names_its_line(tmp_path: Path, patch: dict, msg: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(_line(1) + "\n" + json.dumps({**_rec(2).to_json(), **patch}) + "\n")
    with pytest.raises(DataError, match=f"r.jsonl:2: .*{msg}"):
        ResultStore(p)


def test_a_version_1_store_opens_and_grows_in_version_2(tmp_path: Path) -> None:
    p = tmp_path / "results.jsonl"
    shutil.copy(V1 / "eval" / "results.jsonl", p)
    old = p.read_text().splitlines()
    s = ResultStore(p)
    assert len(s) == 4 and all(r.verdict == "success" and r.gen.max_new_tokens == 4 for r in s)
    s.append([_rec(1)])
    lines = p.read_text().splitlines()
    assert lines[:4] == old  # old lines are never rewritten
    assert "schema" not in json.loads(lines[0]) and json.loads(lines[4])["schema"] == RECORD_SCHEMA
    assert len(ResultStore(p)) == 5
