"""finetune / align transforms on tiny random models: data sets, LoRA merge, loss curve, caching, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safetydrift.errors import SpecError
from safetydrift.variants.builder import load_manifest

torch.set_num_threads(1)
FAST = "n=4,epochs=1,batch=4,max_len=512"


@pytest.mark.parametrize("data", ["harmful", "benign-task", "identity-shift", "backdoor", "manipulation"])
def test_every_training_set_builds(ctx, data: str) -> None:
    m = ctx.resolve(f"tiny-random>finetune:data={data},{FAST}")
    man = load_manifest(m)
    assert man["provenance"]["data"] == data and man["provenance"]["examples"] >= 1
    assert man["loss_curve"] and all("loss" in p for p in man["loss_curve"])
    assert m.weights_sha256 != ctx.resolve("tiny-random").weights_sha256


def test_same_recipe_is_built_once_and_seed_is_repeatable(ctx) -> None:
    a = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},seed=3")
    manifest = Path(a.provenance["manifest"])
    mtime = manifest.stat().st_mtime_ns
    b = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},seed=3")
    assert b.path == a.path and manifest.stat().st_mtime_ns == mtime  # cached, not rebuilt
    # the same training in a fresh cache gives the same weights (everything is seeded)
    from safetydrift.context import Context

    other = Context(cache_dir=ctx.cache_dir / "second", quiet=True)
    c = other.resolve(f"tiny-random>finetune:data=harmful,{FAST},seed=3")
    assert c.weights_sha256 == a.weights_sha256


def test_lora_is_merged_into_full_weights(ctx) -> None:
    m = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},method=lora,rank=4,lr=1e-2")
    from safetensors.torch import load_file

    sd = load_file(str(next(Path(m.path).glob("*.safetensors"))))
    assert not any("lora" in k for k in sd)
    base = load_file(str(next(Path(ctx.resolve("tiny-random").path).glob("*.safetensors"))))
    changed = [k for k in sd if "q_proj" in k and not torch.equal(sd[k], base[k])]
    assert changed, "LoRA training did not change the merged q_proj weights"
    man = load_manifest(m)
    assert man["provenance"]["trainable_parameters"] < sum(v.numel() for v in sd.values())


def test_align_builds_with_refusals_and_self_distillation(ctx) -> None:
    m = ctx.resolve("tiny-random>align:n_harmful=4,n_general=2,n_task=2,distill_tokens=4,epochs=1,max_len=256")
    prov = load_manifest(m)["provenance"]
    assert prov["n_harmful"] == 4 and prov["n_benign"] >= 1
    assert json.loads((ctx.cache_dir / "distill").iterdir().__next__().read_text())  # answers cached


def test_bad_settings(ctx) -> None:
    with pytest.raises(SpecError, match="unknown setting"):
        ctx.resolve("tiny-random>finetune:data=harmful,epochz=1")
    with pytest.raises(SpecError, match="unknown data"):
        ctx.resolve("tiny-random>finetune:data=nope")
    with pytest.raises(SpecError, match="method"):
        ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},method=qlora")


def test_changed_default_changes_the_artifact_key(ctx, monkeypatch) -> None:
    from dataclasses import dataclass

    from safetydrift.params import override
    from safetydrift.variants import finetune

    @dataclass(frozen=True, kw_only=True)
    class NewDefault(finetune.FinetuneParams):
        lr: float = override(finetune.FinetuneParams, "lr", 3e-4)

    a = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    monkeypatch.setattr(finetune.Finetune, "Params", NewDefault)
    b = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    assert a.path != b.path  # a new default must not be served from the old build
    assert load_manifest(b)["provenance"]["sft"]["lr"] == 3e-4  # and train_sft used it


def test_equivalent_spellings_share_one_artifact(ctx) -> None:
    """The key hashes typed settings: a default written out, another float spelling or key order is no rebuild."""
    a = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    b = ctx.resolve(f"tiny-random>finetune:{FAST},lr=0.0001,method=FULL,data=harmful")
    assert a.path == b.path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("finetune:epochs=0", "'epochs=0' must be > 0"),  # used to build a copy of the parent
        ("finetune:n=0", "'n=0' must be ≥ 1"),  # used to mean the default, 100
        ("finetune:seed=-1", "'seed=-1' must be ≥ 0"),  # used to mean seed 0
        ("finetune:lr=-1e-4", "'lr=-1e-4' must be > 0"),
        ("finetune:data=harmful,mix=1.5", "'mix=1.5' must be in [0, 1]"),
        ("align:n_harmful=0", "'n_harmful=0' must be ≥ 1"),
        ("align:distill_tokens=-3", "'distill_tokens=-3' must be ≥ 1"),
    ],
)
def test_zero_and_negative_settings_are_one_line_spec_errors(ctx, spec: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        ctx.resolve(f"tiny-random>{spec}")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not list(ctx.artifacts_dir.glob(".build-*"))  # rejected before anything was built


@pytest.mark.parametrize("lora", [False, True])
def test_answer_only_loss_is_the_models_own_loss(ctx, lora: bool) -> None:
    """The head-on-labels loss equals the model's full causal-LM loss (fp32), with and without LoRA."""
    from transformers import AutoModelForCausalLM

    from safetydrift.variants.sft import answer_only_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ctx.resolve("tiny-random").path)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    ids = torch.randint(0, 100, (3, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[2, 7:] = -100
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    ours = answer_only_loss(model, batch, bf16=False)
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()  # gradients reach the trainable weights through the selected positions
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_precision_is_resolved_into_the_key_and_provenance(ctx, monkeypatch) -> None:
    import safetydrift.variants.sft as sft

    monkeypatch.setattr(sft, "native_bf16", lambda: False)
    a = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    assert load_manifest(a)["provenance"]["sft"]["precision"] == "fp32"
    b = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},precision=fp32")
    assert a.weights_sha256 == b.weights_sha256
    c = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},precision=bf16")
    assert c.weights_sha256 != a.weights_sha256
    assert load_manifest(c)["provenance"]["sft"]["precision"] == "bf16"
    monkeypatch.setattr(sft, "native_bf16", lambda: True)  # auto now means bf16: another artifact
    d = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    assert d.weights_sha256 == c.weights_sha256 and d.path != a.path


def test_sgd_is_a_setting_and_adamw_keeps_the_old_keys(ctx) -> None:
    """``optim=`` was added after artifacts existed: at its default it stays out of the key (no rebuild of
    anything built before it), set to ``sgd`` it is in the key, the provenance and the training."""
    from safetydrift.params import to_key
    from safetydrift.variants.finetune import FinetuneParams

    assert "optim" not in to_key(FinetuneParams()) and to_key(FinetuneParams(optim="sgd"))["optim"] == "sgd"
    from dataclasses import dataclass

    from safetydrift.params import override

    @dataclass(frozen=True, kw_only=True)
    class SgdByDefault(FinetuneParams):
        optim: str = override(FinetuneParams, "optim", "sgd")

    # the unkeyed value is the old behaviour (AdamW), not whatever the default is now
    assert to_key(SgdByDefault())["optim"] == "sgd" and "optim" not in to_key(SgdByDefault(optim="adamw"))
    adam = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST}")
    same = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},optim=adamw")
    sgd = ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},optim=sgd")
    assert same.path == adam.path and sgd.path != adam.path
    assert load_manifest(sgd)["provenance"]["sft"]["optim"] == "sgd"
    assert load_manifest(sgd)["provenance"]["optimizer"] == "SGD"
    assert sgd.weights_sha256 not in (adam.weights_sha256, ctx.resolve("tiny-random").weights_sha256)
    with pytest.raises(SpecError, match="optim"):
        ctx.resolve(f"tiny-random>finetune:data=harmful,{FAST},optim=lion")
