"""scripts/prune_part.py: a finished part's built variants go, and nothing another config needs goes with them."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    return load_script("prune_part")


def _artifact(artifacts: Path, name: str, recipe: str) -> Path:
    d = artifacts / name
    (d / "hf").mkdir(parents=True)
    (d / "hf" / "model.safetensors").write_bytes(b"x" * 1000)
    (d / "manifest.json").write_text(json.dumps({"recipe": recipe, "path": "hf"}))
    return d


def _config(path: Path, variants: dict[str, str]) -> Path:
    lines = ["name: t", "variants:"] + [f"  {k}: {{recipe: \"{v}\"}}" for k, v in variants.items()]
    path.write_text("\n".join([*lines, "datasets: [advbench50]", "judges: [keyword]", ""]))
    return path


FT = "tiny-random>finetune:data=harmful,lr=1e-4,n=10,epochs=1"


def test_only_the_parts_own_unneeded_artifacts_go(tmp_path: Path) -> None:
    mod = _script()
    cache = tmp_path / "cache"
    art = cache / "artifacts"
    ft = _artifact(art, "ft", FT)
    bd = _artifact(art, "bd", FT + ">bitdelta:heal=false")
    kept_by_other = _artifact(art, "shared", FT + ">bitdelta")
    stranger = _artifact(art, "stranger", "tiny-random>finetune:data=benign,n=10")
    building = _artifact(art, ".build-abc-p1-x", FT + ">bitdelta:heal=false")  # a build in progress
    old_trash = _artifact(art, ".trash-old", FT)  # an interrupted removal
    broken = art / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    part = _config(tmp_path / "part.yaml", {"ft": FT, "bd": FT + ">bitdelta:heal=false", "healed": FT + ">bitdelta"})
    # the other config names the same healed variant in another spelling (a default written out, lr as 0.0001):
    # the builder keys both alike, so it stays; and it needs the fine-tune as its parent
    other = _config(tmp_path / "other.yaml",
                    {"h": "tiny-random>finetune:data=harmful,lr=0.0001,n=10,epochs=1>bitdelta:heal=true"})

    assert mod.main([str(part), "--keep", str(other), "--cache", str(cache)]) == 0
    assert all(d.exists() for d in (ft, bd, kept_by_other, stranger, broken))  # listing deletes nothing

    assert mod.main([str(part), "--keep", str(other), "--cache", str(cache), "--delete"]) == 0
    assert not bd.exists()
    assert ft.exists() and kept_by_other.exists() and stranger.exists() and broken.exists() and building.exists()
    assert not old_trash.exists() and not list(art.glob(".trash-*"))


def test_a_missing_part_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main([str(tmp_path / "nope.yaml"), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and err.count("\n") == 1
