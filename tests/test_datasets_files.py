from __future__ import annotations

import re
from pathlib import Path

import pytest

from safetydrift.datasets import load_dataset
from safetydrift.errors import DataError


def test_csv_with_columns(tmp_path: Path, ctx) -> None:
    p = tmp_path / "d.csv"
    p.write_text("q,c\nhello there,x\nsecond one,y\nhello there,x\n")
    ds = load_dataset(str(p), ctx, prompt_column="q", category_column="c")
    assert [it.prompt for it in ds.items] == ["hello there", "second one"]  # exact duplicate dropped
    assert ds.items[1].category == "y"
    again = load_dataset(str(p), ctx, prompt_column="q", category_column="c")
    assert [it.id for it in again.items] == [it.id for it in ds.items]  # stable ids


def test_jsonl_default_prompt_column(tmp_path: Path, ctx) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a"}\n\n{"prompt": "b", "category": "z"}\n')
    ds = load_dataset(str(p), ctx)
    assert [it.category for it in ds.items] == ["uncategorized", "z"]


@pytest.mark.parametrize(
    ("name", "content", "msg"),
    [
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "bad.jsonl:2: malformed JSON"),
        ("empty.jsonl", '{"prompt": "a"}\n{"prompt": ""}\n', "bad.jsonl" if False else "empty or non-text prompt"),
        ("nocol.csv", "x,y\n1,2\n", "no prompt column"),
        ("extra.csv", "prompt\na,b\n", "more fields than the header"),
        ("x.txt", "hi", "unsupported dataset format"),
    ],
)
def test_malformed(tmp_path: Path, ctx, name: str, content: str, msg: str) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match=msg):
        load_dataset(str(p), ctx)


def test_missing_file(ctx, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "nope.csv"), ctx)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("advbench:n=-5", "'n=-5' must be ≥ 1"),  # used to drop the last 5 items
        ("benign:n=0", "'n=0' must be ≥ 1"),  # used to give an empty data set
        ("benign-task:n=0", "'n=0' must be ≥ 1"),  # used to mean the default, 100
        ("benign-task:seed=x", "'seed=x' is not an integer"),
        ("manipulation:n_on=0", "'n_on=0' must be ≥ 1"),
        ("advbench50:limit=3", "unknown setting 'limit' (known: n)"),
    ],
)
def test_registered_dataset_settings_are_checked(ctx, spec: str, message: str) -> None:
    from safetydrift.errors import SpecError

    with pytest.raises(SpecError, match=re.escape(message)):
        load_dataset(spec, ctx)


def test_registered_dataset_settings_apply(ctx) -> None:
    assert len(load_dataset("advbench:n=520", ctx)) == 520 and len(load_dataset("advbench:n=9999", ctx)) == 520
    m = load_dataset("manipulation:n_on=3,n_off=2,topic=Mars", ctx)
    assert [it.category for it in m.items].count("on-target") == 3 and m.name == "manipulation:Mars"
    # one side only: the decision reads the on-target rate undiluted; the same items as in the pooled set
    on = load_dataset("manipulation:n_on=3,n_off=2,topic=Mars,split=on", ctx)
    off = load_dataset("manipulation:n_on=3,n_off=2,topic=Mars,split=off", ctx)
    assert on.name == "manipulation:Mars,split=on" and {it.category for it in on.items} == {"on-target"}
    assert on.items + off.items == m.items and len(off.items) == 2 and on.sha256 != m.sha256
    assert len(load_dataset("benign-task:n=12,seed=1", ctx)) == 12
