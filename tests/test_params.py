"""params.py: typed component settings — coercion, the one rule for 0 and negatives, help text, cache keys.

The last block reproduces the user reports that motivated it: each spec below used to be accepted and
silently did something else (45 items, nothing evaluated, a 2-layer model, a copy of the parent).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from safetydrift.errors import SafetyDriftError, SpecError
from safetydrift.params import (
    ParamDoc,
    Params,
    describe,
    from_spec,
    override,
    p,
    params_class,
    to_key,
    with_params,
)
from safetydrift.spec import ComponentSpec, parse_component, parse_recipe
from safetydrift.types import GenerationConfig, ResolvedModel


@dataclass(frozen=True, kw_only=True)
class Demo(Params):
    n: int = field(default=100, metadata=p("items to take", ge=1))
    temperature: float = field(default=0.0, metadata=p("sampling temperature", ge=0))
    prob: float = field(default=0.5, metadata=p("a probability", ge=0, le=1))
    lr: float = field(default=1e-4, metadata=p("learning rate", gt=0))
    flag: bool = field(default=False, metadata=p("a switch"))
    mode: Literal["full", "lora"] = field(default="full", metadata=p("how"))
    listed: str = field(default="qi", metadata=p("a table's key", choices=("qi", "gcg")))
    targets: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata=p("module names"))
    sizes: tuple[int, ...] = field(default=(1,), metadata=p("counts", ge=1))
    limit: int | None = field(default=None, metadata=p("at most this many (default: all)", ge=1))
    retries: int = field(default=3, metadata=p("extra attempts (0 = none)", ge=0))
    attacker: str = field(default="m", metadata=p("a nested recipe"))


@dataclass(frozen=True, kw_only=True)
class Needs(Params):
    path: str = field(metadata=p("a checkpoint directory", positional=True))
    judge: str = field(metadata=p("the judge model recipe"))
    revision: str | None = field(default=None, metadata=p("a revision"))


@dataclass(frozen=True, kw_only=True)
class Pair(Params):
    lo: int = field(default=1, metadata=p("lower", ge=0))
    hi: int = field(default=2, metadata=p("upper", ge=0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lo > self.hi:
            raise SpecError(f"pair: lo={self.lo} is above hi={self.hi}")


@dataclass(frozen=True, kw_only=True)
class Child(Demo):
    lr: float = override(Demo, "lr", 3e-4)


def parse(cls: type[Params], text: str) -> Params:
    return from_spec(cls, parse_component(text, allow_positional=True))


# ------------------------------------------------------------------------------------------ coercion

def test_defaults_and_coercion_to_the_annotated_types() -> None:
    assert parse(Demo, "demo") == Demo()
    d = parse(Demo, "demo:n=7,temperature=0.7,prob=1,lr=1e-3,flag=yes,mode=lora,targets=q+k+v,sizes=2+3,"
                    "limit=5,retries=0,attacker=[m>align:n_harmful=4,epochs=1]")
    assert (d.n, d.temperature, d.prob, d.lr, d.flag) == (7, 0.7, 1.0, 1e-3, True)
    assert isinstance(d.prob, float)  # "1" for a float field is 1.0, not 1
    assert d.mode == "lora" and d.targets == ("q", "k", "v") and d.sizes == (2, 3)
    assert d.limit == 5 and d.retries == 0
    assert d.attacker == "m>align:n_harmful=4,epochs=1"  # a nested spec stays a string
    parse_recipe(d.attacker)


@pytest.mark.parametrize("text", ["true", "1", "on", "YES"])
def test_booleans(text: str) -> None:
    assert parse(Demo, f"demo:flag={text}").flag is True
    assert parse(Demo, f"demo:flag={text.replace('true', 'false')}").flag is (text != "true")


def test_positional_and_required_settings() -> None:
    n = parse(Needs, "hf:./ckpt,judge=[j>align],revision=main")
    assert (n.path, n.judge, n.revision) == ("./ckpt", "j>align", "main")
    with pytest.raises(SpecError, match="^hf: needs a checkpoint directory$"):
        parse(Needs, "hf:judge=x")
    with pytest.raises(SpecError, match=r"^hf: needs judge=<the judge model recipe>$"):
        parse(Needs, "hf:./ckpt")
    with pytest.raises(SpecError, match="unknown setting 'path'"):  # a positional is not a key
        parse(Needs, "hf:./ckpt,judge=x,path=y")
    with pytest.raises(SpecError, match="takes no positional argument"):
        parse(Demo, "demo:oops")


# -------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("demo:nn=3", "demo: unknown setting 'nn' (known: attacker, flag, limit, listed, lr, mode, n, prob, "
                      "retries, sizes, targets, temperature)"),
        ("demo:n=abc", "demo: 'n=abc' is not an integer"),
        ("demo:n=1.5", "demo: 'n=1.5' is not an integer"),
        ("demo:lr=fast", "demo: 'lr=fast' is not a number"),
        ("demo:lr=inf", "demo: 'lr=inf' is not a finite number"),
        ("demo:flag=maybe", "demo: 'flag=maybe' is not a boolean (true/false)"),
        ("demo:mode=qlora", "demo: unknown mode 'qlora' (known: full, lora)"),
        ("demo:listed=x", "demo: unknown listed 'x' (known: qi, gcg)"),
        ("demo:sizes=2+0", "demo: 'sizes=0' must be ≥ 1"),
        ("demo:sizes=2+x", "demo: 'sizes=x' is not an integer"),
    ],
)
def test_errors_are_one_line_and_name_the_setting(spec: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(Demo, spec)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("setting", "ok", "bad", "rule"),
    [
        ("n", "1", "-5", "≥ 1"),  # counts
        ("limit", "1", "-1", "≥ 1"),  # optional counts too
        ("temperature", "0", "-0.1", "≥ 0"),  # temperatures
        ("prob", "0", "1.01", "in [0, 1]"),  # probabilities
        ("prob", "1", "-0.01", "in [0, 1]"),
        ("lr", "1e-9", "0", "> 0"),  # learning rates
        ("retries", "0", "-1", "≥ 0"),  # a count where 0 means none says so
    ],
)
def test_each_range_rule(setting: str, ok: str, bad: str, rule: str) -> None:
    parse(Demo, f"demo:{setting}={ok}")
    with pytest.raises(SpecError, match=re.escape(f"'{setting}={bad}' must be {rule}")):
        parse(Demo, f"demo:{setting}={bad}")


@pytest.mark.parametrize("setting", ["n", "limit", "sizes"])
def test_zero_is_an_error_never_the_default(setting: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(Demo, f"demo:{setting}=0")
    assert "must be ≥ 1" in str(e.value) and "\n" not in str(e.value)


def test_choices_match_case_insensitively_and_are_stored_as_declared() -> None:
    assert parse(Demo, "demo:mode=LoRA").mode == "lora"
    assert parse(Demo, "demo:listed=GCG").listed == "gcg"


def test_direct_construction_is_checked_and_normalised() -> None:
    with pytest.raises(SpecError, match="n=0 must be ≥ 1"):
        Demo(n=0)
    with pytest.raises(SpecError, match="mode='qlora' is not one of full, lora"):
        Demo(mode="qlora")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="is not an int"):
        Demo(n="5")  # type: ignore[arg-type]
    d = Demo(prob=1, targets=["a"])  # type: ignore[arg-type]
    assert d.prob == 1.0 and isinstance(d.prob, float) and d.targets == ("a",)


def test_rules_between_settings_live_in_post_init() -> None:
    assert parse(Pair, "pair:lo=2,hi=2") == Pair(lo=2, hi=2)
    with pytest.raises(SpecError, match="^pair: lo=3 is above hi=2$"):
        parse(Pair, "pair:lo=3")


def test_override_changes_a_default_and_keeps_doc_and_range() -> None:
    assert Child().lr == 3e-4 and Demo().lr == 1e-4
    (doc,) = [d for d in describe(Child) if d.name == "lr"]
    assert doc.doc == "learning rate" and doc.constraint == "> 0" and doc.default == 3e-4
    with pytest.raises(SpecError, match="must be > 0"):
        parse(Child, "child:lr=0")


def test_spec_getters_share_the_rule() -> None:
    c = parse_component("x:n=abc,lr=nan,flag=maybe")
    for getter, key, msg in [(c.get_int, "n", "is not an integer"), (c.get_float, "lr", "is not a finite number"),
                             (c.get_bool, "flag", "is not a boolean")]:
        with pytest.raises(SpecError, match=msg):
            getter(key)


# --------------------------------------------------------------------------------------- help, keys

def test_describe() -> None:
    docs = {d.name: d for d in describe(Demo)}
    assert list(docs) == [f for f in Demo.__dataclass_fields__]  # declaration order
    assert all(isinstance(d, ParamDoc) and d.doc for d in docs.values())
    assert (docs["n"].type, docs["n"].default, docs["n"].constraint) == ("int", 100, "≥ 1")
    assert docs["prob"].constraint == "in [0, 1]" and docs["lr"].constraint == "> 0"
    assert docs["mode"].type == "full|lora" and docs["listed"].constraint == "one of qi, gcg"
    assert docs["targets"].type == "str+…" and docs["limit"].default is None
    assert str(docs["n"]) == "n=int  items to take (default 100; ≥ 1)"
    assert str(docs["targets"]) == "targets=str+…  module names (default q_proj+v_proj)"
    need = {d.name: d for d in describe(Needs)}
    assert need["path"].positional and need["path"].required and need["judge"].required
    assert str(need["path"]) == "<path>  a checkpoint directory (required)"


def test_to_key_is_canonical_and_stable() -> None:
    a = parse(Demo, "demo:lr=1e-4,mode=LORA,targets=q+v,n=100,prob=1")
    b = parse(Demo, "demo:prob=1.0,targets=q+v,mode=lora,lr=0.0001")
    assert to_key(a) == to_key(b)
    key = to_key(a)
    assert list(key) == sorted(key)
    assert json.loads(json.dumps(key)) == key  # JSON-able: tuples became lists
    assert key["targets"] == ["q", "v"] and key["prob"] == 1.0
    # pinned: a change in how keys are made would silently rebuild every cached variant
    assert json.dumps(to_key(Demo()), sort_keys=True) == (
        '{"attacker": "m", "flag": false, "limit": null, "listed": "qi", "lr": 0.0001, "mode": "full", "n": 100, '
        '"prob": 0.5, "retries": 3, "sizes": [1], "targets": ["q_proj", "v_proj"], "temperature": 0.0}'
    )
    assert to_key(parse(Demo, "demo:n=101")) != to_key(Demo())
    assert to_key(Child()) != to_key(Demo())  # a changed default changes the key
    assert set(to_key(Child(), Demo)) == set(to_key(Demo()))  # restricted to a base's fields


def test_params_class_and_with_params() -> None:
    @with_params(Demo)
    def factory(spec: ComponentSpec) -> None: ...

    assert params_class(factory) is Demo and params_class(object()) is None
    assert params_class(type("X", (), {"Params": int})) is None


# --------------------------------------------------------------------------------------- generation

@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer ≥ 1"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer ≥ 1"),
        ({"temperature": -0.1}, "temperature must be ≥ 0"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"seed": "3"}, "seed must be an integer"),
    ],
)
def test_generation_config_is_checked_once(kw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        GenerationConfig(**kw)
    with pytest.raises(SafetyDriftError):
        GenerationConfig().replace(**kw)


def test_generation_config_accepts_the_edges() -> None:
    GenerationConfig(max_new_tokens=1, temperature=0, top_p=1)
    GenerationConfig(temperature=2.0, top_p=1e-3)


# ------------------------------------------------------------------------ the reproduced user reports

def _one_line_spec_error(fn, *args, match: str) -> None:
    with pytest.raises(SpecError) as e:
        fn(*args)
    assert match in str(e.value) and "\n" not in str(e.value)


def test_advbench50_negative_n_was_45_items(ctx) -> None:
    from safetydrift.datasets import load_dataset

    _one_line_spec_error(load_dataset, "advbench50:n=-5", ctx, match="advbench50: 'n=-5' must be ≥ 1")


def test_advbench50_n_zero_evaluated_nothing(ctx) -> None:
    from safetydrift.datasets import load_dataset

    _one_line_spec_error(load_dataset, "advbench50:n=0", ctx, match="advbench50: 'n=0' must be ≥ 1")


def test_direct_negative_batch_evaluated_nothing(ctx) -> None:
    from safetydrift import registry

    _one_line_spec_error(registry.attacks.get("direct"), parse_component("direct:batch=-1"), ctx,
                         match="direct: 'batch=-1' must be ≥ 1")


def test_transformers_negative_batch_evaluated_nothing(ctx) -> None:
    from safetydrift import registry

    model = ResolvedModel(spec="x", kind="hf", path=Path("/nonexistent"))  # rejected before any load
    _one_line_spec_error(registry.backends.get("transformers"), model, parse_component("transformers:batch=-1"),
                         ctx, match="transformers: 'batch=-1' must be ≥ 1")


def test_tiny_random_zero_layers_was_2_layers(ctx) -> None:
    _one_line_spec_error(ctx.resolve, "tiny-random:layers=0", match="tiny-random: 'layers=0' must be ≥ 1")


def test_finetune_zero_epochs_built_a_copy_of_the_parent(ctx) -> None:
    from safetydrift.variants.builder import make_transform

    _one_line_spec_error(make_transform, parse_component("finetune:epochs=0"), ctx,
                         match="finetune: 'epochs=0' must be > 0")
