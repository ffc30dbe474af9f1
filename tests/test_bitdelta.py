"""BitDelta: the math (α = mean|Δ|, Ŵ = W_ref + α·sign(Δ)), healing, storage, fidelity options, caching."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import perturbed_copy
from safetydrift.context import Context
from safetydrift.errors import SpecError
from safetydrift.types import ResolvedModel
from safetydrift.variants import bitdelta as bd
from safetydrift.variants import checkpoint
from safetydrift.variants.builder import load_manifest

TINY_NAMES = {
    f"model.layers.{i}.{m}.weight"
    for i in range(2)
    for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
}


pytestmark = pytest.mark.usefixtures("one_thread")




def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bitdelta")
    ctx = Context(cache_dir=root / "cache", quiet=True)
    base = ctx.resolve("tiny-random")
    ft = perturbed_copy(base.path, root / "ft")
    return SimpleNamespace(ctx=ctx, base=base, ft=ft, root=root, recipe=f"hf:{ft}>bitdelta:ref=[tiny-random]")


def artifact(model: ResolvedModel) -> Path:
    return Path(model.provenance["manifest"]).parent


# ------------------------------------------------------------------------------ selection, codecs

def test_default_patterns_pick_block_linears_of_several_architectures():
    fake = {n: torch.zeros(2, 2) for n in TINY_NAMES}
    fake.update({
        "model.embed_tokens.weight": torch.zeros(2, 2), "lm_head.weight": torch.zeros(2, 2),
        "model.layers.0.input_layernorm.weight": torch.zeros(2), "model.norm.weight": torch.zeros(2),
        "model.layers.0.self_attn.q_proj.bias": torch.zeros(2),
        "transformer.h.3.attn.c_attn.weight": torch.zeros(2, 2), "transformer.h.3.mlp.c_fc.weight": torch.zeros(2, 2),
        "transformer.wte.weight": torch.zeros(2, 2),
        "gpt_neox.layers.1.attention.query_key_value.weight": torch.zeros(2, 2),
        "gpt_neox.layers.1.mlp.dense_h_to_4h.weight": torch.zeros(2, 2),
    })
    got = set(checkpoint.select_matrices(fake.items()))
    assert got == TINY_NAMES | {
        "transformer.h.3.attn.c_attn.weight", "transformer.h.3.mlp.c_fc.weight",
        "gpt_neox.layers.1.attention.query_key_value.weight", "gpt_neox.layers.1.mlp.dense_h_to_4h.weight",
    }
    only_attn = checkpoint.select_matrices(fake.items(), include=[r"self_attn\."], exclude=[r"o_proj"])
    assert sorted(only_attn) == sorted(n for n in TINY_NAMES if "self_attn" in n and "o_proj" not in n)


@pytest.mark.parametrize("k", range(1, 9))
def test_pack_codes_round_trip(k):
    rng = torch.Generator().manual_seed(k)
    codes = torch.randint(0, 1 << k, (1001,), generator=rng, dtype=torch.int64).to(torch.uint8).numpy()
    packed = bd.pack_codes(codes, k)
    assert packed.nbytes == -(-1001 * k // 8)
    assert (bd.unpack_codes(packed, k, 1001) == codes).all()


def test_sign_of_zero_is_plus_one():
    delta = torch.tensor([[0.0, -2.0], [1.0, 0.0]])
    f = bd.encode_signs(delta)
    assert f["alpha"].item() == pytest.approx(0.75)
    assert torch.equal(bd.decode_signs(f, (2, 2)), torch.tensor([[0.75, -0.75], [0.75, 0.75]]))
    zero = bd.encode_signs(torch.zeros(3, 8))
    assert zero["alpha"].item() == 0.0 and torch.equal(bd.decode_signs(zero, (3, 8)), torch.zeros(3, 8))


def _state_dicts(seed: int = 0, shape: tuple[int, int] = (48, 96)) -> tuple[dict, dict, list[str]]:
    g = torch.Generator().manual_seed(seed)
    names = ["layers.0.q_proj.weight", "layers.0.down_proj.weight"]
    ref = {n: torch.randn(shape, generator=g) * 0.02 for n in names}
    ref["embed.weight"] = torch.randn(10, 4, generator=g)
    # a delta with some low-rank structure plus noise, like a fine-tune
    ft = {n: w + 0.01 * torch.randn(shape[0], 3, generator=g) @ torch.randn(3, shape[1], generator=g)
          + 0.003 * torch.randn(shape, generator=g) for n, w in ref.items() if n in names}
    ft["embed.weight"] = ref["embed.weight"] + 1.0
    return ref, ft, names


def _error(ref: dict, ft: dict, delta: bd.CompressedDelta) -> float:
    return sum(float((ft[n] - ref[n] - delta.decode(n)).pow(2).sum()) for n in delta.names) ** 0.5


OPTIONS = [{}, {"masks": 2}, {"masks": 3}, {"bits": 2}, {"bits": 4}, {"bits": 8}, {"rank": 2}, {"rank": 4},
           {"rank": 8}]


def _expected_delta(d: torch.Tensor, opts: dict) -> torch.Tensor:
    """Δ̂ written out from the module docstring's formulas, independently of the codecs."""
    if "bits" in opts:
        levels, group = 2 ** opts["bits"] - 1, 128
        assert d.numel() % group == 0  # no padding in these shapes
        g = d.reshape(-1, group)
        lo, hi = g.min(1).values[:, None], g.max(1).values[:, None]
        s = (hi - lo) / levels
        return (lo + torch.clamp(torch.round((g - lo) / s), 0, levels) * s).reshape(d.shape)
    if "rank" in opts:
        r = opts["rank"]
        u, sv, vh = torch.linalg.svd(d, full_matrices=False)
        return (u[:, :r].half().float() * sv[:r].half().float()) @ vh[:r].half().float()
    out, residual = torch.zeros_like(d), d.clone()
    for _ in range(opts.get("masks", 1)):
        step = residual.abs().mean() * torch.where(residual >= 0, 1.0, -1.0)
        out, residual = out + step, residual - step
    return out


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "1bit")
def test_every_fidelity_option_round_trips(opts, tmp_path):
    ref, ft, names = _state_dicts()
    delta = bd.compress(ref, ft, names, meta={"reference_sha256": "abc"}, **opts)
    size = bd.save_delta(tmp_path / "d.safetensors", delta)
    back = bd.load_delta(tmp_path / "d.safetensors")
    assert back == delta
    assert size == (tmp_path / "d.safetensors").stat().st_size
    rebuilt = bd.apply_delta(ref, back)
    for n in names:
        expected = ref[n] + _expected_delta(ft[n] - ref[n], opts)
        if not opts:  # W_ref + α·sign(W_ft − W_ref), α = mean|Δ|: exact
            assert torch.equal(rebuilt[n], expected)
        else:
            torch.testing.assert_close(rebuilt[n], expected, rtol=0, atol=1e-6)
    assert rebuilt["embed.weight"] is ref["embed.weight"]  # no rest stored: it comes from the reference
    assert back.meta["reference_sha256"] == "abc"


@pytest.mark.parametrize("sigma", [1e-5, 1e-6])
def test_kbit_error_falls_with_bits_for_tiny_deltas(sigma):
    """Group ranges this small are subnormal in fp16: with fp16 lo/scale, 8 bits had 7x the error of a
    uniform 255-step grid at σ = 1e-5, and 28x the error of 4 bits at σ = 1e-6. fp32 keeps the grids nested."""
    g = torch.Generator().manual_seed(0)
    name = "layers.0.q_proj.weight"
    ref = {name: 0.02 * torch.randn(64, 256, generator=g)}
    ft = {name: ref[name] + sigma * torch.randn(64, 256, generator=g)}
    rms = {k: _error(ref, ft, bd.compress(ref, ft, [name], bits=k)) / math.sqrt(64 * 256) for k in (2, 4, 8)}
    assert rms[2] > rms[4] > rms[8]
    assert rms[8] < 0.01 * sigma  # a uniform 255-step grid over ~5σ: ≈ 0.006σ
    fields = bd.compress(ref, ft, [name], bits=8).fields[name]
    assert fields["lo"].dtype == fields["scale"].dtype == torch.float32


def test_reconstruction_error_falls_with_fidelity():
    ref, ft, names = _state_dicts()
    err = {json.dumps(o, sort_keys=True): _error(ref, ft, bd.compress(ref, ft, names, **o)) for o in OPTIONS}
    e = lambda **o: err[json.dumps(o, sort_keys=True)]  # noqa: E731
    assert e() > e(masks=2) > e(masks=3)
    assert e(bits=2) > e(bits=4) > e(bits=8)
    assert e(rank=2) > e(rank=4) > e(rank=8)
    assert e(bits=8) < 0.01 * e()


def test_masks_follow_the_residual_recursion():
    ref, ft, names = _state_dicts()
    delta = bd.compress(ref, ft, names, masks=3)
    for n in names:
        r = ft[n] - ref[n]
        signs = bd.unpack_signs(delta.fields[n], delta.shapes[n])
        for i in range(3):
            alpha = r.abs().mean()
            assert torch.equal(delta.fields[n]["alpha"][i], alpha)
            assert torch.equal(signs[i], torch.where(r >= 0, 1, -1).to(torch.int8))
            r = r - alpha * signs[i]


# --------------------------------------------------------------------------------- the transform

def test_initial_alpha_is_mean_abs_delta_and_rebuild_is_exact(env):
    model = env.ctx.resolve(env.recipe + ",heal=false")
    man = load_manifest(model)
    ref, ft, out = weights(env.base.path), weights(env.ft), weights(model.path)
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    assert set(delta.names) == TINY_NAMES and man["provenance"]["n_matrices"] == 14
    assert delta.meta["reference_sha256"] == env.base.weights_sha256
    for n in delta.names:
        d = ft[n] - ref[n]
        alpha = delta.fields[n]["alpha"]
        assert alpha.shape == (1,) and torch.equal(alpha[0], d.abs().mean())
        assert torch.equal(out[n], ref[n] + alpha[0] * torch.where(d >= 0, 1.0, -1.0))
    for n in set(ft) - TINY_NAMES:  # rest=ft: embeddings, norms, LM head from the fine-tuned model
        assert torch.equal(out[n], ft[n])
    assert man["extra_files"][bd.DELTA_FILE] == (artifact(model) / bd.DELTA_FILE).stat().st_size
    rebuilt = bd.apply_delta(ref, delta)
    assert set(rebuilt) == set(out) and all(torch.equal(rebuilt[n], out[n]) for n in out)
    prov = man["provenance"]
    assert prov["reference"]["weights_sha256"] == env.base.weights_sha256 and prov["rest"] == "ft"
    assert prov["healing"] == {"enabled": False} and man["loss_curve"] == []


def test_rest_from_reference(env):
    model = env.ctx.resolve(env.recipe + ",heal=false,rest=ref")
    ref, out = weights(env.base.path), weights(model.path)
    for n in set(ref) - TINY_NAMES:
        assert torch.equal(out[n], ref[n])


@pytest.mark.parametrize("rest", ["ft", "ref"])
def test_reference_plus_stored_files_rebuild_the_evaluated_checkpoint(env, rest, tmp_path):
    model = env.ctx.resolve(f"{env.recipe},heal=false,rest={rest}")
    man, prov = load_manifest(model), load_manifest(model)["provenance"]
    delta_file = artifact(model) / bd.DELTA_FILE
    delta = bd.load_delta(delta_file)
    assert delta.meta["rest"] == rest and delta.meta["reference_sha256"] == env.base.weights_sha256
    out = weights(model.path)  # what every backend loads and evaluates
    rebuilt = bd.apply_delta(env.base.path, delta)  # from the directory: its hash is checked first
    assert set(rebuilt) == set(out)
    for n, w in out.items():
        assert rebuilt[n].dtype == w.dtype and torch.equal(rebuilt[n], w), n
    rest_file = bd.rest_path(delta_file)
    info = bd.delta_file_info(delta_file)
    if rest == "ft":  # perturbed_copy moved every tensor, so all uncompressed ones are stored
        ft = weights(env.ft)
        assert set(delta.rest) == set(ft) - TINY_NAMES
        assert all(delta.rest[n].dtype == ft[n].dtype and torch.equal(delta.rest[n], ft[n]) for n in delta.rest)
        assert prov["rest_bytes"] == man["extra_files"][bd.REST_FILE] == rest_file.stat().st_size > 0
        assert info["rest_bytes"] == prov["rest_bytes"] and info["rest"] == "ft"
        shutil.copy(delta_file, tmp_path / bd.DELTA_FILE)  # the delta without its rest file is refused
        with pytest.raises(FileNotFoundError, match="uncompressed"):
            bd.load_delta(tmp_path / bd.DELTA_FILE)
    else:
        assert delta.rest == {} and not rest_file.exists() and bd.REST_FILE not in man["extra_files"]
        assert prov["rest_bytes"] == info["rest_bytes"] == 0
    assert prov["delta_bytes"] == delta_file.stat().st_size  # delta_bytes: the compressed matrices only


def test_apply_delta_refuses_the_wrong_reference(env):
    model = env.ctx.resolve(env.recipe + ",heal=false")
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    with pytest.raises(ValueError, match="not this delta's reference"):
        bd.apply_delta(env.ft, delta)


def test_artifact_format_and_resolved_defaults_are_in_the_cache_key(env):
    """The cache key hashes the format (a new one never serves an old artifact) and the settings with
    their mode-dependent defaults resolved, so ``heal=true`` written out or left out is one artifact."""
    from safetydrift.spec import parse_component
    from safetydrift.variants.builder import resolved_settings

    def make(spec: str) -> bd.BitDelta:
        return bd.BitDelta(parse_component(spec), env.ctx)

    t = make("bitdelta:ref=base")
    assert t.key_material([env.base])["format"] == bd.ARTIFACT_FORMAT == 2
    settings = resolved_settings(t)
    assert settings["heal"] is True and settings["masks"] == 1 and settings["group"] is None
    assert settings == resolved_settings(make("bitdelta:ref=base,heal=true,masks=1,steps=50"))
    kbit = make("bitdelta:ref=base,bits=4")
    assert kbit.params.mode == "kbit" and kbit.params.heal is False and kbit.params.group == 128
    assert resolved_settings(kbit) == resolved_settings(make("bitdelta:ref=base,bits=4,group=128,heal=false"))
    assert make("bitdelta:ref=base,rank=2").describe_mode() == "rank=2 SVD (fp16 factors)"


def _calibration_batch(tok, n: int, max_len: int):
    """The held-out batch: the last ``n`` of the 64 calibration texts, never trained on."""
    texts = [checkpoint.render_calibration(x, tok) for x in checkpoint.calibration_items(64, 0)]
    tok.padding_side = "right"
    ids = [tok(t, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    return tok.pad({"input_ids": ids[-n:]}, padding=True, return_tensors="pt")


def test_healing_lowers_logit_mse(env):
    from safetydrift.backends.transformers_backend import load_hf

    initial = env.ctx.resolve(env.recipe + ",heal=false")
    healed = env.ctx.resolve(env.recipe + ",steps=20,batch=4,max_len=48")
    man = load_manifest(healed)
    h = man["provenance"]["healing"]
    assert h["enabled"] and h["mse_after"] < h["mse_before"] and h["mse_batch"] == "held-out"
    assert [p["step"] for p in man["loss_curve"]] == list(range(20))
    assert all(p["loss"] > 0 for p in man["loss_curve"])
    # independently: the healed checkpoint is closer to the fine-tuned logits than BitDelta-Initial
    ft_model, tok = load_hf(env.ft)
    batch = _calibration_batch(tok, 4, 48)
    with torch.no_grad():
        target = ft_model(**batch).logits
        mse = {}
        for name, m in (("initial", initial), ("healed", healed)):
            model, _ = load_hf(m.path)
            mse[name] = float(bd.masked_logit_mse(model(**batch).logits, target, batch["attention_mask"]))
    assert mse["healed"] < mse["initial"]
    assert mse["initial"] == pytest.approx(h["mse_before"], rel=1e-4)
    # healed Ŵ is still exactly W_ref + α·sign(Δ), with the trained α
    delta = bd.load_delta(artifact(healed) / bd.DELTA_FILE)
    ref, ft, out = weights(env.base.path), weights(env.ft), weights(healed.path)
    for n in delta.names:
        a = delta.fields[n]["alpha"][0]
        assert torch.equal(out[n], ref[n] + a * torch.where(ft[n] - ref[n] >= 0, 1.0, -1.0))
    assert delta.alphas() != bd.load_delta(artifact(initial) / bd.DELTA_FILE).alphas()


@pytest.mark.parametrize("opts", ["masks=2,heal=false", "masks=3,steps=3,batch=2,max_len=32", "bits=2", "bits=4",
                                  "bits=8", "rank=4"])
def test_fidelity_options_build_and_reload_exactly(env, opts):
    model = env.ctx.resolve(f"{env.recipe},{opts}")
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    ref, out = weights(env.base.path), weights(model.path)
    rebuilt = bd.apply_delta(ref, delta)
    assert set(rebuilt) == set(out) and all(torch.equal(rebuilt[n], out[n]) for n in out)


def test_delta_is_16x_smaller_than_fp16(tmp_path):
    ctx = Context(cache_dir=tmp_path / "cache", quiet=True)
    base = ctx.resolve("tiny-random:hidden=256")
    ft = perturbed_copy(base.path, tmp_path / "ft")
    model = ctx.resolve(f"hf:{ft}>bitdelta:ref=[tiny-random:hidden=256],heal=false")
    info = bd.delta_file_info(artifact(model) / bd.DELTA_FILE)
    assert info["delta_fp16_bytes"] == 2 * sum(w.numel() for n, w in weights(ft).items() if n in TINY_NAMES)
    assert info["delta_fp16_bytes"] / info["delta_bytes"] >= 15
    assert info["bits_per_weight"] < 1.1


def test_auto_reference_without_finetune_is_a_spec_error(env):
    """``hf:/ft>bitdelta``: the chain's first model is the fine-tune itself, Δ = 0 would pass silently."""
    with pytest.raises(SpecError, match="ref="):
        env.ctx.resolve(f"hf:{env.ft}>bitdelta")


def test_reference_equal_to_the_model_gives_it_back(env):
    model = env.ctx.resolve("tiny-random>bitdelta:ref=base,heal=false")
    man = load_manifest(model)
    assert man["provenance"]["reference"]["weights_sha256"] == env.base.weights_sha256
    assert man["provenance"]["alpha"]["max"] == 0.0
    base, out = weights(env.base.path), weights(model.path)
    assert all(torch.equal(base[n], out[n]) for n in base)


def _fake(spec: str, step: str | None) -> ResolvedModel:
    prov = {"transform": {"name": step, "args": {}, "positional": None}} if step else {"source": "x"}
    return ResolvedModel(spec=spec, kind="hf", path=Path("/nonexistent"), provenance=prov)


def test_reference_selection(env):
    from safetydrift.spec import parse_component

    lineage = [_fake("base", None), _fake("base>align", "align"), _fake("base>align>finetune", "finetune"),
               _fake("base>align>finetune>quantize", "quantize")]

    def pick(ref: str | None, lin=lineage) -> str:
        spec = parse_component("bitdelta" if ref is None else f"bitdelta:ref={ref}")
        return bd.BitDelta(spec, env.ctx).reference(lin)[0].spec

    assert pick(None) == "base>align"  # auto: before the last finetune
    with pytest.raises(SpecError, match="finetune"):
        pick("auto", lineage[:2])  # no finetune step: no silent guess
    assert pick("base") == "base"
    assert pick("parent") == "base>align>finetune"  # the model the parent was built from
    assert pick("1") == "base>align" and pick("-2") == "base>align>finetune"
    with pytest.raises(SpecError):
        pick("7")
    assert pick("tiny-random") == env.base.spec  # a recipe, resolved on its own


@pytest.mark.parametrize("bad", ["bitdelta:typo=1", "bitdelta:bits=4,rank=2", "bitdelta:bits=4,heal=true",
                                 "bitdelta:bits=9", "bitdelta:group=64", "bitdelta:rest=both",
                                 "bitdelta:include=[(unclosed]", "bitdelta:steps=x"])
def test_bad_settings_are_spec_errors(env, bad):
    with pytest.raises(SpecError):
        env.ctx.resolve(f"tiny-random>{bad}")


@pytest.mark.parametrize("zero", ["masks=0", "bits=4,group=0", "batch=0", "calib=0", "max_len=0"])
def test_zero_counts_are_rejected_not_defaulted(env, zero):
    with pytest.raises(SpecError, match="≥ 1"):  # ref=base: the spec is otherwise buildable
        env.ctx.resolve(f"tiny-random>bitdelta:ref=base,heal=false,{zero}")


def test_builder_caches(env, monkeypatch):
    calls = []
    real = bd.BitDelta.build

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(bd.BitDelta, "build", counting)
    recipe = env.recipe + ",heal=false,exclude=mlp"
    first = env.ctx.resolve(recipe)
    manifest = Path(first.provenance["manifest"])
    mtime = manifest.stat().st_mtime_ns
    second = env.ctx.resolve(recipe)
    assert len(calls) == 1 and second.path == first.path and manifest.stat().st_mtime_ns == mtime
    assert load_manifest(second)["provenance"]["n_matrices"] == 8  # exclude=mlp leaves 4 attention × 2


def test_cached_teacher_logits_heal_like_recomputed_ones(env, monkeypatch):
    """The teacher's logits are computed once per calibration text; healing must not depend on that."""
    from safetydrift.backends.transformers_backend import load_hf

    teacher_calls: list[int] = []

    def heal() -> bd.HealResult:
        student, tok = load_hf(env.ft)
        teacher, _ = load_hf(env.ft)
        teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
        ref = weights(env.base.path)
        delta = bd.compress(ref, weights(env.ft), sorted(TINY_NAMES))
        texts = [checkpoint.render_calibration(x, tok) for x in checkpoint.calibration_items(16, 0)]
        return bd.heal_scales(student, teacher, tok, ref, delta, texts, steps=6, batch=4, max_len=48, lr=1e-3,
                              seed=0, progress=False)

    cached = heal()
    assert len(teacher_calls) == 4  # once per calibration batch (16 texts / 4), up front
    teacher_calls.clear()
    monkeypatch.setattr(bd.heal, "TEACHER_CACHE_BYTES", 0)  # read by heal_scales, in the healing module
    recomputed = heal()
    assert len(teacher_calls) == 6 + 2  # every step, plus mse_before and mse_after: the cache really was off
    assert cached.mse_before == pytest.approx(recomputed.mse_before, rel=1e-5)
    for a, b in zip(cached.loss_curve, recomputed.loss_curve, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for n in cached.alphas:
        assert torch.allclose(cached.alphas[n], recomputed.alphas[n], rtol=1e-4)


# ------------------------------------------------------------------------------------ package layout

def test_package_reexports_and_codec_table():
    """The split package keeps the one import path (README: apply_delta/load_delta from
    ``safetydrift.variants.bitdelta``), and every mode the transform can write has a codec that round-trips."""
    import importlib

    from safetydrift.registry import transforms
    from safetydrift.variants import checkpoint, quantize

    for name in bd.__all__:
        assert getattr(bd, name) is not None
    assert bd.apply_delta is importlib.import_module("safetydrift.variants.bitdelta.format").apply_delta
    assert transforms.get("bitdelta") is bd.BitDelta
    assert quantize.select_matrices is checkpoint.select_matrices
    assert set(bd.CODECS) == {"sign", "kbit", "lowrank"}
    delta = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    for mode, settings in (("sign", {"masks": 3}), ("kbit", {"bits": 8, "group": 16}), ("lowrank", {"rank": 8})):
        c = bd.CODECS[mode]
        err = (c.decode(c.encode(delta, settings), delta.shape, settings) - delta).abs().max()
        assert err < 0.6 * delta.abs().max(), mode  # a real reconstruction, not zeros
    with pytest.raises(ValueError, match="unknown delta mode"):
        bd.CompressedDelta("nope", {}, {"w": (2, 2)}, {"w": {}}).decode("w")


def test_healing_stops_early_when_the_held_out_mse_flattens(env):
    """lr ≈ 0 leaves the held-out MSE flat: patience=2 stops after two checks (10 steps), patience=0 never."""
    flat = load_manifest(env.ctx.resolve(env.recipe + ",steps=40,batch=4,max_len=48,lr=1e-12,patience=2"))
    h = flat["provenance"]["healing"]
    assert h["steps_run"] == 10 and len(flat["loss_curve"]) == 10
    assert [c["step"] for c in h["held_out_checks"]] == [0, 5, 10]
    full = load_manifest(env.ctx.resolve(env.recipe + ",steps=40,batch=4,max_len=48,lr=1e-12,patience=0"))
    assert full["provenance"]["healing"]["steps_run"] == 40 and full["provenance"]["healing"]["held_out_checks"] is None
    learning = load_manifest(env.ctx.resolve(env.recipe + ",steps=40,batch=4,max_len=48,patience=2"))
    hl = learning["provenance"]["healing"]
    best = min(c["mse"] for c in hl["held_out_checks"])
    assert hl["mse_after"] <= best * (1 + 1e-6)  # the best check's α's are the ones kept


def test_healing_never_ends_worse_than_where_it_started(env):
    """A huge lr makes every check worse than step 0: early stopping must keep the initial α's (the demo's
    one-step fine-tune once healed to a held-out logit MSE 26,000× its start and an ASR above its teacher)."""
    initial = load_manifest(env.ctx.resolve(env.recipe + ",heal=false"))
    wild = load_manifest(env.ctx.resolve(env.recipe + ",steps=20,batch=4,max_len=48,lr=0.5,patience=2"))
    h = wild["provenance"]["healing"]
    assert max(c["mse"] for c in h["held_out_checks"][1:]) > h["mse_before"]  # the steps really did harm
    assert h["mse_after"] == pytest.approx(h["mse_before"], rel=1e-5)
    assert wild["provenance"]["alpha"]["mean"] == pytest.approx(initial["provenance"]["alpha"]["mean"], rel=1e-6)
    assert wild["provenance"]["alpha"]["mean_rel_change"] == pytest.approx(0.0, abs=1e-6)
