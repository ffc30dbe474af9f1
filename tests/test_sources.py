from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from safetydrift.errors import ModelLoadError, SpecError
from safetydrift.sources.shipped import join_parts


def test_join_parts_verifies_magic_size_and_checksum(tmp_path: Path) -> None:
    a, b = tmp_path / "part01.bin", tmp_path / "part02.bin"
    a.write_bytes(b"GGUF" + b"x" * 10)
    b.write_bytes(b"y" * 6)
    whole = a.read_bytes() + b.read_bytes()
    out = join_parts([a, b], tmp_path / "m.gguf", len(whole), hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole
    with pytest.raises(ModelLoadError, match="expected"):
        join_parts([a, b], tmp_path / "m2.gguf", len(whole) + 1)
    with pytest.raises(ModelLoadError, match="sha256"):
        join_parts([a, b], tmp_path / "m3.gguf", None, "0" * 64)
    with pytest.raises(ModelLoadError, match="not GGUF"):
        join_parts([b, a], tmp_path / "m4.gguf")
    assert not (tmp_path / "m2.gguf").exists() and not (tmp_path / "m4.gguf").exists()
    assert not list(tmp_path.glob(".join-*"))  # nothing half-written left behind


def test_hf_source_errors(ctx, tmp_path: Path) -> None:
    from safetydrift.sources.hf import hf
    from safetydrift.spec import parse_component

    with pytest.raises(ModelLoadError, match="not found"):
        hf(parse_component(f"hf:{tmp_path / 'nope'}", allow_positional=True), ctx)
    (tmp_path / "d").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        hf(parse_component(f"hf:{tmp_path / 'd'}", allow_positional=True), ctx)
    with pytest.raises(ModelLoadError, match="not in the local HF cache"):
        hf(parse_component("hf:nobody/no-such-model-xyz", allow_positional=True), ctx)
    with pytest.raises(SpecError):
        hf(parse_component("hf"), ctx)


def test_gguf_source_errors(ctx, tmp_path: Path) -> None:
    from safetydrift.sources.gguf import gguf
    from safetydrift.spec import parse_component

    with pytest.raises(ModelLoadError, match="not found"):
        gguf(parse_component(f"gguf:{tmp_path / 'x.gguf'}", allow_positional=True), ctx)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE....")
    with pytest.raises(ModelLoadError, match="bad magic"):
        gguf(parse_component(f"gguf:{bad}", allow_positional=True), ctx)


def test_openai_source_spec_errors(ctx) -> None:
    from safetydrift.sources.openai import openai
    from safetydrift.spec import parse_component

    m = openai(parse_component("openai:http://127.0.0.1:9/v1#m", allow_positional=True), ctx)
    assert m.kind == "openai" and m.url == "http://127.0.0.1:9/v1" and m.model_name == "m"
    for bad in ("openai:http://x/v1", "openai:ftp://x#m", "openai:http://x#"):
        with pytest.raises(SpecError):
            openai(parse_component(bad, allow_positional=True), ctx)


def test_hf_dir_and_tiny_random_roundtrip(ctx) -> None:
    m = ctx.resolve("tiny-random")
    again = ctx.resolve(f"hf:{m.path}")
    assert again.weights_sha256 == m.weights_sha256 and again.kind == "hf"


def test_source_settings_are_typed(ctx) -> None:
    """Sources parse their settings with params.from_spec: a positional where none is taken, a bad count
    or an impossible shape is a one-line SpecError, never a silent default."""
    for bad, message in [
        ("tiny-random:oops", "takes no positional argument"),  # used to be ignored
        ("tiny-random:layers=0", "'layers=0' must be ≥ 1"),  # used to become 2
        ("tiny-random:heads=-4", "'heads=-4' must be ≥ 1"),  # used to reach LlamaConfig
        ("tiny-random:hidden=66", "hidden=66 is not a multiple of heads=4"),
        ("gguf:./m.gguf,native=perhaps", "'native=perhaps' is not a boolean"),
        ("openai:http://x/v1#m,key=K", "unknown setting 'key' (known: key_env)"),
        ("smollm2-135m-instruct:n=1", "unknown setting 'n' (known: none)"),  # before any package install
    ]:
        with pytest.raises(SpecError, match=re.escape(message)):
            ctx.resolve(bad)
    m = ctx.resolve("openai:http://127.0.0.1:9/v1#m,key_env=MY_KEY")
    assert m.provenance["key_env"] == "MY_KEY"
