"""Guard filters declare typed Params: one rule for types, ranges and defaults, and the guard step's keys
are exactly the filters' Params fields (plus the guard's own)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from safetydrift import registry
from safetydrift.errors import SpecError
from safetydrift.guards.base import SIDES, GuardFilter
from safetydrift.guards.spec import GuardParams, parse_guard_step
from safetydrift.params import Params, describe, from_spec, to_key
from safetydrift.spec import ComponentSpec, parse_component

NAMES = registry.guards.names()
REQUIRED = {"llm": {"judge": "tiny-random"}}  # settings a filter cannot do without


def parse(text: str):
    return parse_guard_step(parse_component(text))


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_the_params_fields(name: str) -> None:
    cls = registry.guards.get(name)
    assert issubclass(cls, GuardFilter) and issubclass(cls.Params, Params)
    assert list(cls.settings) == [f.name for f in fields(cls.Params)]
    for key, sides in cls.settings.items():
        assert sides and sides <= cls.sides, f"{name}.{key}: on a side the filter lacks"
    assert all(d.doc.strip() for d in describe(cls.Params)), f"{name}: an undocumented setting"


@pytest.mark.parametrize("name", NAMES)
def test_the_guard_uses_the_params_defaults(name: str) -> None:
    """What the guard serves with, left at defaults, is what the Params declare: one place for defaults."""
    cls = registry.guards.get(name)
    defaults = to_key(from_spec(cls.Params, ComponentSpec(name, dict(REQUIRED.get(name, {})))))
    for side in sorted(cls.sides):
        extra = "".join(f",{k}=[{v}]" for k, v in REQUIRED.get(name, {}).items())
        settings = parse(f"guard:{side}={name}{extra}").settings
        for key, on in cls.settings.items():
            if side in on:
                assert settings[key] == defaults[key], f"{name} on {side}: {key}"
            else:
                assert key not in settings, f"{name} on {side}: {key} does nothing there and must not be keyed"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("guard:input=classifier,threshold=-0.1", r"guard classifier: 'threshold=-0.1' must be in \[0, 1\]"),
        ("guard:output=classifier,out_threshold=2", r"'out_threshold=2' must be in \[0, 1\]"),
        ("guard:input=classifier,threshold=high", r"'threshold=high' is not a number"),
        ("guard:input=smoothllm,q=0", r"'q=0' must be ≥ 1 \(leave it out for the default\)"),
        ("guard:input=smoothllm,q=2.5", r"'q=2.5' is not an integer"),
        ("guard:input=smoothllm,smooth_tokens=0", r"'smooth_tokens=0' must be ≥ 1"),
        ("guard:input=smoothllm,p=-0.5", r"'p=-0.5' must be in \[0, 1\]"),
        ("guard:input=perplexity,ppl_window=-1", r"'ppl_window=-1' must be ≥ 0"),
        ("guard:input=perplexity,ppl_window=1", "ppl_window must be 0 .whole prompt. or at least 2"),
        ("guard:input=perplexity,ppl_threshold=0", "ppl_threshold must be a positive number or auto"),
        ("guard:input=perplexity,ppl_threshold=nan", "ppl_threshold must be a positive number or auto"),
        ("guard:input=perplexity,ppl_model=[a>>b]", "empty step"),
        ("guard:output=keyword,openers=all", r"unknown openers 'all' \(known: none, project\)"),
        ("guard:output=llm,judge=[m],on_unparsed=maybe", "unknown on_unparsed 'maybe'"),
        ("guard:output=llm", "guard llm: needs judge="),
        ("guard:input=keyword,seed=-1", r"guard: 'seed=-1' must be ≥ 0"),
        ("guard:input=keyword,colour=red", "guard: unknown setting 'colour'"),
        ("guard:output=classifier,threshold=0.3", "'threshold' needs the filter input:classifier"),
        ("guard:input=keyword,openers=project", "'openers' needs the filter output:keyword"),
    ],
)
def test_ranges_types_and_unknown_keys(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse(spec)


@pytest.mark.parametrize("name", NAMES)
def test_each_filter_rejects_a_key_it_does_not_own(name: str) -> None:
    cls = registry.guards.get(name)
    with pytest.raises(SpecError, match="unknown setting 'colour'"):
        from_spec(cls.Params, ComponentSpec(name, {**REQUIRED.get(name, {}), "colour": "red"}))


def test_values_are_typed_and_written_once() -> None:
    s = parse("guard:input=classifier+smoothllm+perplexity,output=keyword,threshold=0.7,q=3,p=0.25,"
              "ppl_threshold=12.5,ppl_window=8,openers=project,seed=4")
    assert s.settings["threshold"] == 0.7 and s.settings["q"] == 3 and s.settings["p"] == 0.25
    assert s.settings["ppl_threshold"] == 12.5 and s.settings["ppl_window"] == 8
    assert s.settings["openers"] == "project" and s.seed == 4 and s.input == ("classifier", "smoothllm", "perplexity")
    assert isinstance(s.settings["q"], int) and isinstance(s.settings["threshold"], float)
    assert parse("guard:input=perplexity").settings["ppl_threshold"] == "auto"
    assert [f.name for f in fields(GuardParams)] == ["input", "output", "seed"]


def test_a_filter_without_params_takes_no_settings() -> None:
    from safetydrift.guards.base import InputFilter

    class Plain(InputFilter):
        name = "plain"

    assert dict(Plain.settings) == {}
    with pytest.raises(TypeError, match="side_of names settings its Params lacks"):
        type("Bad", (InputFilter,), {"name": "bad", "side_of": {"nope": frozenset({"input"})}})
    assert set(SIDES) == {"input", "output"}
