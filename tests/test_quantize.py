"""quantize: RTN math and checkpoints, torchao, GPU-only methods on CPU, the GGUF branch, settings, caching."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from safetydrift.context import Context
from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.variants import quantize as qz
from safetydrift.variants.builder import load_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    ctx = Context(cache_dir=tmp_path_factory.mktemp("quantize") / "cache", quiet=True)
    return SimpleNamespace(ctx=ctx, base=ctx.resolve("tiny-random"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def test_rtn_is_symmetric_groupwise_round_to_nearest():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 200, generator=g)  # 200 columns: the last group of 128 is padded
    errs = {}
    for bits in (2, 4, 8):
        w_hat, packed = qz.rtn_quantize(w, bits, 128)
        qmax = 2 ** (bits - 1) - 1
        assert w_hat.shape == w.shape
        for cols in (slice(0, 128), slice(128, 200)):
            s = (w[:, cols].abs().amax(1, keepdim=True) / qmax).half().float()
            q = w_hat[:, cols] / s
            assert torch.allclose(q, q.round(), atol=1e-4) and q.abs().max() <= qmax + 1e-4
            assert torch.equal(w_hat[:, cols], torch.clamp(torch.round(w[:, cols] / s), -qmax, qmax) * s)
        assert packed == -(-16 * 200 * bits // 8) + 2 * 16 * 2
        errs[bits] = float((w - w_hat).norm())
    assert errs[8] < errs[4] < errs[2]
    per_row, _ = qz.rtn_quantize(w, 4, 0)  # group=0: one scale per row
    assert torch.equal(per_row, torch.clamp(torch.round(w / ((w.abs().amax(1, keepdim=True) / 7).half().float())),
                                            -7, 7) * (w.abs().amax(1, keepdim=True) / 7).half().float())


def test_rtn_checkpoints_8bit_beat_4bit(env):
    base = weights(env.base.path)
    err = {}
    for bits in (8, 4):
        m = env.ctx.resolve(f"tiny-random>quantize:method=rtn,bits={bits},group=32")
        out, prov = weights(m.path), load_manifest(m)["provenance"]
        assert prov["n_matrices"] == 14 and prov["bits"] == bits
        assert prov["bits_per_weight"] == pytest.approx(bits + 16 / 32)
        changed = {n for n in base if not torch.equal(base[n], out[n])}
        assert changed and all(".layers." in n and "_proj." in n for n in changed)  # embeddings/norms/head untouched
        err[bits] = sum(float((base[n] - out[n]).pow(2).sum()) for n in base) ** 0.5
        assert prov["relative_error"] > 0
    assert err[8] < err[4]
    assert (env.base.path / "tokenizer.json").read_bytes() == (Path(m.path) / "tokenizer.json").read_bytes()


def test_gptq_and_awq_need_a_gpu(env):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for method in ("gptq", "awq"):
        with pytest.raises(UnsupportedError, match="needs a CUDA GPU"):
            env.ctx.resolve(f"tiny-random>quantize:method={method},bits=4")


def test_torchao_missing_is_a_one_line_unsupported_error(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(UnsupportedError, match="needs torchao") as e:
        env.ctx.resolve("tiny-random>quantize:method=torchao")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_torchao_int8_weight_only(env):
    m = env.ctx.resolve("tiny-random>quantize:method=torchao,exclude=down_proj")
    prov = load_manifest(m)["provenance"]
    assert prov["n_matrices"] == 12 and 8 < prov["bits_per_weight"] < 9
    base, out = weights(env.base.path), weights(m.path)
    for n in base:
        if n.endswith(("q_proj.weight", "up_proj.weight")):
            scale = base[n].abs().amax(1, keepdim=True) / 127
            assert 0 < float((base[n] - out[n]).abs().max()) <= float(scale.max()) * 0.51
        elif not n.endswith("_proj.weight") or "down_proj" in n:
            assert torch.equal(base[n], out[n])


def test_gguf_types_are_checked(env):
    with pytest.raises(SpecError, match="Q4_K_M"):
        env.ctx.resolve("tiny-random>quantize:method=gguf,type=Q4_0")
    with pytest.raises(SpecError):
        env.ctx.resolve("tiny-random>quantize:method=gguf,bits=4")  # bits is not a gguf setting


def test_gguf_branch_calls_the_llamacpp_engine(env, monkeypatch):
    calls = []

    def convert_hf_to_gguf(hf_dir, out_path, outtype="f16"):
        calls.append(("convert", Path(hf_dir), outtype))
        Path(out_path).write_bytes(b"GGUF-f16")

    def quantize_gguf(src, dst, qtype):
        calls.append(("quantize", qtype))
        Path(dst).write_bytes(Path(src).read_bytes() + qtype.encode())

    fake = types.ModuleType("safetydrift.llamacpp")
    fake.convert_hf_to_gguf, fake.quantize_gguf = convert_hf_to_gguf, quantize_gguf
    monkeypatch.setitem(sys.modules, "safetydrift.llamacpp", fake)
    m = env.ctx.resolve("tiny-random>quantize:method=gguf,type=q8_0")
    assert m.kind == "gguf" and m.path.name == "model-Q8_0.gguf" and m.path.read_bytes() == b"GGUF-f16Q8_0"
    assert calls == [("convert", env.base.path, "f16"), ("quantize", "Q8_0")]
    assert not (m.path.parent / "model-f16.gguf").exists()


@pytest.mark.parametrize("bad", ["quantize:typo=1", "quantize:method=nf4", "quantize:bits=1", "quantize:bits=16",
                                 "quantize:method=torchao,bits=4", "quantize:method=rtn,type=Q8_0",
                                 "quantize:group=-1"])
def test_bad_settings_are_spec_errors(env, bad):
    with pytest.raises(SpecError):
        env.ctx.resolve(f"tiny-random>{bad}")


def test_builder_caches(env, monkeypatch):
    calls = []
    real = qz.Quantize.build

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(qz.Quantize, "build", counting)
    first = env.ctx.resolve("tiny-random>quantize:bits=6,group=16")
    mtime = Path(first.provenance["manifest"]).stat().st_mtime_ns
    second = env.ctx.resolve("tiny-random>quantize:bits=6,group=16")
    assert len(calls) == 1 and second.path == first.path
    assert Path(second.provenance["manifest"]).stat().st_mtime_ns == mtime


def test_settings_are_typed_params_and_defaults_resolve_per_method(env):
    """bits defaults to 4 (8 for torchao); a default written out is the same artifact key."""
    from safetydrift.spec import parse_component
    from safetydrift.variants.builder import resolved_settings

    def make(spec: str) -> qz.Quantize:
        return qz.Quantize(parse_component(spec), env.ctx)

    assert make("quantize").params.bits == 4 and make("quantize:method=torchao").params.bits == 8
    assert make("quantize:method=gguf,type=q2_k").params.type == "Q2_K"  # choices match case-insensitively
    assert resolved_settings(make("quantize")) == resolved_settings(make("quantize:method=rtn,bits=4,group=128"))
    assert resolved_settings(make("quantize:group=0")) != resolved_settings(make("quantize"))  # 0 = per row, not default
    for bad, message in [("quantize:method=gptq,calib=0", "'calib=0' must be ≥ 1"),
                         ("quantize:bits=four", "'bits=four' is not an integer")]:
        with pytest.raises(SpecError, match=message):
            make(bad)
