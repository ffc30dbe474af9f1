"""Verified artifacts: a corrupted cached variant is never used, hashes never go stale, no sidecars."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from safetydrift.context import Context
from safetydrift.hashing import sha256_file
from safetydrift.variants.artifacts import sweep_stale_builds

RECIPE = "tiny-random>quantize:method=rtn,bits=8"


def _ctx(cache: Path, verify: str = "fast") -> Context:
    return Context(cache_dir=cache, quiet=True, verify=verify)  # type: ignore[arg-type]


def _overwrite_same_size(path: Path, keep_mtime: bool = True) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))
    if keep_mtime:  # the old memo keyed by size and mtime could not see this
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_same_size_corruption_is_detected_and_rebuilt(tmp_path: Path, verify: str) -> None:
    cache = tmp_path / "c"
    m = _ctx(cache).resolve(RECIPE)
    weights = Path(m.path) / "model.safetensors"
    good = sha256_file(weights)
    _overwrite_same_size(weights)
    assert sha256_file(weights) != good
    again = _ctx(cache, verify).resolve(RECIPE)  # a new context, as in a new process
    assert again.weights_sha256 == m.weights_sha256
    assert sha256_file(Path(again.path) / "model.safetensors") == good  # rebuilt, not used as is


def test_truncation_is_detected_even_with_verify_off(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    m = _ctx(cache).resolve(RECIPE)
    weights = Path(m.path) / "model.safetensors"
    good = sha256_file(weights)
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    again = _ctx(cache, "off").resolve(RECIPE)
    assert sha256_file(Path(again.path) / "model.safetensors") == good


def test_manifest_records_every_file(tmp_path: Path) -> None:
    m = _ctx(tmp_path / "c").resolve(RECIPE)
    root = Path(m.provenance["manifest"]).parent
    manifest = json.loads((root / "manifest.json").read_text())
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        assert info["size"] == (root / rel).stat().st_size
        assert info["sha256"] == sha256_file(root / rel)


def test_swapped_hf_weights_get_a_new_hash_and_no_sidecar(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    ctx = _ctx(cache)
    src = Path(ctx.resolve("tiny-random").path)
    user = tmp_path / "my-model"
    shutil.copytree(src, user)
    first = _ctx(cache).resolve(f"hf:{user}").weights_sha256
    _overwrite_same_size(user / "model.safetensors")  # same size, mtime put back
    second = _ctx(cache).resolve(f"hf:{user}").weights_sha256
    assert first != second
    assert not list(user.glob("*.sha256.json")), "hash memos must live in the cache, not in users' folders"


def test_killed_build_dirs_are_swept(tmp_path: Path) -> None:
    arts = tmp_path / "artifacts"
    arts.mkdir()
    dead = arts / ".build-abcdef123456-p999999999-x1"  # no such process
    legacy = arts / ".build-abcdef123456-x2"  # written by an older version: no pid
    mine = arts / f".build-abcdef123456-p{os.getpid()}-x3"
    for d in (dead, legacy, mine):
        d.mkdir()
    removed = sweep_stale_builds(arts)
    assert set(removed) == {dead, legacy}
    assert mine.exists() and not dead.exists() and not legacy.exists()


def test_build_cli_checks_the_existing_artifact(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    r = run_cli("build", RECIPE, cache=cache)
    assert r.returncode == 0, r.stderr
    weights = Path(r.stdout.strip()) / "model.safetensors"
    good = sha256_file(weights)
    _overwrite_same_size(weights)
    r = run_cli("build", RECIPE, cache=cache)
    assert r.returncode == 0, r.stderr
    assert "corrupted" in r.stderr
    assert sha256_file(Path(r.stdout.strip()) / "model.safetensors") == good
