"""BitDelta's mechanism controls: ``scale=λ`` (Δ̂ = λ·Δ, pure shrink), ``signs=random`` (α·random ±1, the
floor), the effective shrink λ* = <Δ̂, Δ>/<Δ, Δ> every build records, and why one Adam step is a 1-bit delta."""

from __future__ import annotations

import math
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

pytestmark = pytest.mark.usefixtures("one_thread")

FP32_ULP = torch.finfo(torch.float32).eps


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def artifact(model: ResolvedModel) -> Path:
    return Path(model.provenance["manifest"]).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bitdelta_controls")
    ctx = Context(cache_dir=root / "cache", quiet=True)
    base = ctx.resolve("tiny-random")
    ft = perturbed_copy(base.path, root / "ft")  # Δ ~ N(0, 0.01²) on every tensor
    ref_w, ft_w = weights(base.path), weights(ft)
    names = sorted(checkpoint.select_matrices(ft_w.items()))
    return SimpleNamespace(ctx=ctx, base=base, ft=ft, root=root, ref=ref_w, ftw=ft_w, names=names,
                           recipe=f"hf:{ft}>bitdelta:ref=[tiny-random]")


def build(env: SimpleNamespace, settings: str, ctx: Context | None = None) -> tuple[ResolvedModel, dict]:
    model = (ctx or env.ctx).resolve(f"{env.recipe},{settings}")
    return model, load_manifest(model)["provenance"]


def _atol(*ws: torch.Tensor) -> float:
    """A few fp32 ulps of the largest weight involved: Ŵ − W_ref is a difference of rounded fp32 numbers."""
    return 4 * FP32_ULP * max(float(w.abs().max()) for w in ws)


# ---------------------------------------------------------------------------------------- scale=λ

@pytest.mark.parametrize("lam", [0.3, 0.7])
def test_scale_is_lambda_times_the_delta(env, lam):
    model, prov = build(env, f"scale={lam}")
    out = weights(model.path)
    for n in env.names:
        d = env.ftw[n] - env.ref[n]
        torch.testing.assert_close(out[n] - env.ref[n], lam * d, rtol=0, atol=_atol(out[n], env.ref[n]))
        assert not torch.allclose(out[n], env.ftw[n], atol=1e-4)  # really moved off the fine-tune
    for n in set(out) - set(env.names):  # rest=ft
        assert torch.equal(out[n], env.ftw[n])
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    assert delta.mode == "scale" and delta.settings == {"scale": lam}
    rebuilt = bd.apply_delta(env.ref, delta)
    assert all(torch.equal(rebuilt[n], out[n]) for n in out)  # the stored files rebuild it bit for bit
    assert prov["healing"] == {"enabled": False} and prov["alpha"] == {}
    assert prov["effective_scale"]["pooled"] == pytest.approx(lam, rel=1e-6)
    assert prov["effective_scale"]["cosine"] == pytest.approx(1.0, rel=1e-6)
    n_el = sum(env.ref[n].numel() for n in env.names)
    assert prov["control"]["kind"] == "scale" and prov["control"]["lambda"] == lam
    assert prov["control"]["equivalent_bytes"] == 2 * n_el == prov["delta_fp16_bytes"]
    assert prov["delta_bytes"] > 4 * n_el  # what is actually stored: the exact fp32 Δ


def test_scale_one_reproduces_the_finetune(env):
    model, _ = build(env, "scale=1")
    out = weights(model.path)
    assert set(out) == set(env.ftw)
    for n, w in env.ftw.items():
        torch.testing.assert_close(out[n], w, rtol=0, atol=_atol(w, env.ref[n]))


def test_effective_scale_of_bitdelta_initial_by_hand(env):
    """λ* = <α·sign(Δ), Δ>/<Δ, Δ> = mean|Δ|²/mean(Δ²): 2/π for perturbed_copy's Gaussian Δ."""
    model, prov = build(env, "heal=false")
    eff = prov["effective_scale"]
    n = "model.layers.1.mlp.up_proj.weight"
    d = (env.ftw[n] - env.ref[n]).double()
    alpha = d.abs().mean()
    by_hand = float((alpha * torch.where(d >= 0, 1.0, -1.0).double() * d).sum() / (d * d).sum())
    assert eff["per_matrix"][n] == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(float(d.abs().mean() ** 2 / (d * d).mean()), rel=1e-9)
    assert set(eff["per_matrix"]) == set(env.names) and eff["n"] == len(env.names)
    assert eff["pooled"] == pytest.approx(2 / math.pi, abs=0.02)
    assert eff["cosine"] == pytest.approx(math.sqrt(eff["pooled"]), rel=1e-3)  # |Δ̂|² = n·α² for one mask
    assert "initial" not in eff  # nothing was healed


def test_effective_scale_follows_the_healed_alphas(env):
    """After healing, λ* moves with α (the signs are frozen): λ*_healed = λ*_initial · α_healed/α_initial."""
    _, initial = build(env, "heal=false")
    model, healed = build(env, "steps=3,batch=2,max_len=32")
    eff = healed["effective_scale"]
    assert eff["initial"]["per_matrix"] == pytest.approx(initial["effective_scale"]["per_matrix"], rel=1e-9)
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    for n in env.names:
        ratio = float(delta.fields[n]["alpha"][0]) / float((env.ftw[n] - env.ref[n]).abs().mean())
        assert eff["per_matrix"][n] == pytest.approx(eff["initial"]["per_matrix"][n] * ratio, rel=1e-5)
    assert eff["per_matrix"] != eff["initial"]["per_matrix"]


# ---------------------------------------------------------------------------------- signs=random

def test_random_signs_keep_alpha_and_lose_direction(env):
    model, prov = build(env, "signs=random")
    initial, _ = build(env, "heal=false")
    out = weights(model.path)
    d_rand = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    d_init = bd.load_delta(artifact(initial) / bd.DELTA_FILE)
    assert d_rand.mode == "random_sign" and d_rand.settings == {"seed": 0}
    agree, total = 0, 0
    for n in env.names:
        a = d_rand.fields[n]["alpha"]
        assert torch.equal(a, d_init.fields[n]["alpha"])  # BitDelta-Initial's α = mean|Δ|, bit for bit
        step = out[n] - env.ref[n]
        torch.testing.assert_close(step.abs(), a.expand_as(step), rtol=0, atol=_atol(out[n], env.ref[n]))
        agree += int((torch.sign(step) == torch.sign(env.ftw[n] - env.ref[n])).sum())
        total += step.numel()
    assert 0.45 < agree / total < 0.55  # a coin flip, where BitDelta agrees on every weight
    assert abs(prov["effective_scale"]["pooled"]) < 0.03
    assert prov["healing"] == {"enabled": False}
    assert d_rand.payload_bytes == d_init.payload_bytes  # exactly the bytes of 1-bit BitDelta
    assert prov["control"]["kind"] == "random_sign" and prov["control"]["equivalent_bytes"] == prov["delta_bytes"]
    rebuilt = bd.apply_delta(env.ref, d_rand)
    assert all(torch.equal(rebuilt[n], out[n]) for n in out)


def test_random_signs_are_seeded(env, tmp_path):
    first, _ = build(env, "signs=random,seed=0")
    again, _ = build(env, "signs=random,seed=0", Context(cache_dir=tmp_path / "other", quiet=True))  # rebuilt
    other, _ = build(env, "signs=random,seed=1")
    assert artifact(again) != artifact(first)
    w0, w0b, w1 = weights(first.path), weights(again.path), weights(other.path)
    assert all(torch.equal(w0[n], w0b[n]) for n in w0)
    for n in env.names:
        assert not torch.equal(w0[n], w1[n])


def test_random_signs_per_matrix_independent_of_selection():
    g = torch.Generator().manual_seed(0)
    ref = {n: torch.zeros(16, 32) for n in ("a.weight", "b.weight")}
    ft = {n: torch.randn(16, 32, generator=g) for n in ref}
    both = bd.compress(ref, ft, ["a.weight", "b.weight"], signs="random", seed=3)
    alone = bd.compress(ref, ft, ["b.weight"], signs="random", seed=3)
    assert torch.equal(both.fields["b.weight"]["signs"], alone.fields["b.weight"]["signs"])
    assert not torch.equal(both.fields["a.weight"]["signs"], both.fields["b.weight"]["signs"])  # same shape
    assert bd.matrix_seed(3, "a.weight") != bd.matrix_seed(4, "a.weight")


def test_compress_controls_and_their_exclusions():
    g = torch.Generator().manual_seed(0)
    ref = {"w": torch.randn(8, 16, generator=g)}
    ft = {"w": ref["w"] + 0.01 * torch.randn(8, 16, generator=g)}
    d = ft["w"] - ref["w"]
    scaled = bd.compress(ref, ft, ["w"], scale=0.5)
    assert torch.equal(scaled.decode("w"), 0.5 * d)
    assert scaled.alphas() == []
    with pytest.raises(ValueError, match="choose one"):
        bd.compress(ref, ft, ["w"], scale=0.5, signs="random")
    with pytest.raises(ValueError, match="choose one"):
        bd.compress(ref, ft, ["w"], bits=4, scale=0.5)
    with pytest.raises(ValueError, match="signs"):
        bd.compress(ref, ft, ["w"], signs="sometimes")


# ----------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", [
    "scale=0.5,masks=2", "scale=0.5,masks=1", "scale=0.5,bits=4", "scale=0.5,rank=2", "scale=0.5,signs=random",
    "scale=0.5,heal=true", "scale=0.5,group=64", "scale=0", "scale=-0.5", "scale=nan", "scale=x",
    "signs=random,heal=true", "signs=random,bits=4", "signs=random,rank=2", "signs=random,masks=2",
    "signs=sometimes",
])
def test_bad_control_combinations_are_one_line_spec_errors(env, bad):
    from safetydrift.spec import parse_component

    with pytest.raises(SpecError) as err:
        env.ctx.resolve(f"tiny-random>bitdelta:ref=base,{bad}")
    assert "\n" not in str(err.value) and "bitdelta" in str(err.value).lower()
    with pytest.raises(SpecError):
        bd.BitDelta(parse_component(f"bitdelta:{bad}"), env.ctx)


def test_controls_resolve_to_unhealed_modes_with_their_own_keys(env):
    from safetydrift.spec import parse_component
    from safetydrift.variants.builder import resolved_settings

    def make(spec: str) -> bd.BitDelta:
        return bd.BitDelta(parse_component(spec), env.ctx)

    scale, rand, plain = make("bitdelta:scale=0.7"), make("bitdelta:signs=random,heal=false"), make("bitdelta")
    assert (scale.params.mode, scale.params.heal, scale.params.masks) == ("scale", False, None)
    assert (rand.params.mode, rand.params.heal, rand.params.masks) == ("random_sign", False, None)
    assert (plain.params.mode, plain.params.heal, plain.params.signs) == ("sign", True, "delta")
    assert resolved_settings(make("bitdelta:signs=random")) == resolved_settings(rand)
    assert resolved_settings(make("bitdelta:signs=delta")) == resolved_settings(plain)
    keys = {str(resolved_settings(t)) for t in (scale, rand, plain, make("bitdelta:scale=1"))}
    assert len(keys) == 4  # a control never serves BitDelta's artifact, nor another λ's
    assert "scale=λ" in bd.transform.__doc__ and "signs=random" in bd.transform.__doc__


# ------------------------------------------------------------------------- one Adam step = 1 bit

def _one_step(ctx: Context, optimizer: str, lr: float, eps: float = 1e-8):
    """(W_ref, W_ft, gradients, selected matrices) of one optimizer step on a tiny random Llama."""
    from safetydrift.backends.transformers_backend import load_hf

    model, _ = load_hf(ctx.resolve("tiny-random").path)
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt = (torch.optim.AdamW(model.parameters(), lr=lr, eps=eps, weight_decay=0.0) if optimizer == "adamw"
           else torch.optim.SGD(model.parameters(), lr=lr))
    opt.step()
    ft = {n: p.detach().clone() for n, p in model.named_parameters()}
    return ref, ft, grads, checkpoint.select_matrices(ft.items())


@pytest.mark.parametrize("eps", [1e-8, 1e-16])
def test_one_adam_step_is_exactly_a_one_bit_delta(ctx, eps):
    """From a fresh state, m̂ = g and v̂ = g², so Δ = −lr·g/(|g| + ε): |Δ| = lr up to ε, α = mean|Δ| ≈ lr, and
    α·sign(Δ) rebuilds the step. With the default ε = 1e-8 a few weights with |g| ~ ε move less (the bound
    below); with ε → 0 the rebuild is exact to fp32 rounding."""
    lr = 1e-3
    ref, ft, grads, names = _one_step(ctx, "adamw", lr, eps)
    delta = bd.compress(ref, ft, names)
    assert len(names) == 14
    for n in names:
        d, g = ft[n] - ref[n], grads[n]
        fp = _atol(ref[n], ft[n])
        torch.testing.assert_close(d, -lr * g / (g.abs() + eps), rtol=0, atol=fp)  # the Adam step, written out
        assert torch.all(d[g == 0] == 0)
        alpha = float(delta.fields[n]["alpha"][0])
        assert alpha == pytest.approx(lr * float((g.abs() / (g.abs() + eps)).mean()), abs=fp)
        err = (delta.decode(n) - d).abs()
        # entrywise: |α·sign(Δ) − Δ| ≤ |α − lr| + lr·ε/(|g| + ε)  (exact where |g| ≫ ε)
        assert torch.all(err <= abs(alpha - lr) + lr * eps / (g.abs() + eps) + 2 * fp), n
        if eps < 1e-12:
            moved = g != 0
            assert float(err[moved].max()) <= 2 * fp, n  # to fp tolerance: Δ = ±lr
            assert alpha == pytest.approx(lr, abs=fp)


def test_one_sgd_step_is_not_a_one_bit_delta(ctx):
    """The contrast that makes the Adam test meaningful: an SGD step Δ = −lr·g has |Δ| ∝ |g|, and one α per
    matrix cannot rebuild it (relative error √(1 − λ*) with λ* = mean|g|²/mean(g²))."""
    ref, ft, _, names = _one_step(ctx, "sgd", 1.0)
    delta = bd.compress(ref, ft, names)
    for n in names:
        d = ft[n] - ref[n]
        rel = float((delta.decode(n) - d).norm() / d.norm())
        assert rel > 0.3, n


# ---------------------------------------------------------------------------------------- matched=true

def test_matched_shrink_is_bitdelta_initials_component_along_the_delta(env):
    """matched=true: Δ̂ = λ*_m·Δ per matrix with λ*_m = mean|Δ|²/mean(Δ²), i.e. BitDelta-Initial's own effective
    shrink of that matrix (its per-matrix λ*, recorded by the 1-bit build), along Δ's exact direction."""
    model, prov = build(env, "matched=true")
    _, initial = build(env, "heal=false")
    out = weights(model.path)
    per = prov["effective_scale"]["per_matrix"]
    assert per.keys() == initial["effective_scale"]["per_matrix"].keys()
    for n in env.names:
        d = env.ftw[n].double() - env.ref[n].double()
        lam = float(d.abs().mean() ** 2 / (d * d).mean())
        assert per[n] == pytest.approx(lam, rel=1e-5) == initial["effective_scale"]["per_matrix"][n]
        torch.testing.assert_close(out[n] - env.ref[n], (lam * d).float(), rtol=0, atol=_atol(out[n], env.ref[n]))
    # parallel to Δ in every matrix (the pooled cosine is not quite 1: the matrices' λ* differ)
    assert prov["effective_scale"]["cosine"] > 0.9999 > 0.95 > initial["effective_scale"]["cosine"]
    assert prov["control"]["kind"] == "scale_matched" and prov["healing"] == {"enabled": False}
    delta = bd.load_delta(artifact(model) / bd.DELTA_FILE)
    assert delta.mode == "scale_matched"
    rebuilt = bd.apply_delta(env.ref, delta)
    assert all(torch.equal(rebuilt[n], out[n]) for n in out)
    with pytest.raises(SpecError, match="control"):
        build(env, "matched=true,scale=0.5")
    with pytest.raises(SpecError, match="never healed"):
        build(env, "matched=true,heal=true")
