"""Every registered component declares typed settings (garak-style: covered the moment it is registered).

For each entry of each registry: it has ``Params`` (a ``params.Params`` subclass), ``describe`` documents
every setting, the bare name parses to the defaults (which survive a round trip through the spec
grammar and make a JSON cache key), and, where construction is cheap, the component builds with its
defaults on a fresh ``Context``. Components other owners have not converted yet are strict xfails: the
case fails loudly the moment one is converted, so its entry below must then be deleted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from safetydrift import registry
from safetydrift.context import Context
from safetydrift.errors import SpecError
from safetydrift.params import ParamDoc, describe, from_spec, params_class, to_key
from safetydrift.spec import ComponentSpec, parse_component

KINDS = ("sources", "transforms", "backends", "datasets", "attacks", "judges", "guards")

# (kind, name) -> the area whose owner converts it; delete the entry when the case XPASSes.
NOT_CONVERTED: dict[tuple[str, str], str] = {}
NOT_CONVERTED_KINDS: dict[str, str] = {}

# Construction loads a model (or needs one to be named): covered by their own tests instead.
NEEDS_A_MODEL = {
    ("judges", "classifier"),  # MiniLM embedder
    ("judges", "refusal"),  # a trained card (judges/data/refusal) and its base model
    ("judges", "harm"),
    ("judges", "tap-rating"),  # judge=<model> is required
    ("judges", "harmfulness"),
    ("judges", "strongreject"),
    ("judges", "harmbench"),
    ("judges", "llamaguard"),
}
CHEAP_KINDS = ("datasets", "judges", "attacks", "transforms")  # constructing these loads nothing


def _registries() -> list[tuple[str, registry.Registry]]:
    return [(k, getattr(registry, k)) for k in KINDS if isinstance(getattr(registry, k, None), registry.Registry)]


def _cases(kinds: tuple[str, ...] | None = None) -> list[Any]:
    out = []
    for kind, reg in _registries():
        if kinds is not None and kind not in kinds:
            continue
        for name in reg.names():
            owner = NOT_CONVERTED.get((kind, name)) or NOT_CONVERTED_KINDS.get(kind)
            marks = [pytest.mark.xfail(strict=True, reason=f"converted by the {owner} owner")] if owner else []
            out.append(pytest.param(kind, name, id=f"{kind}:{name}", marks=marks))
    return out


def _params(kind: str, name: str) -> Any:
    obj = getattr(registry, kind).get(name)
    cls = params_class(obj)
    assert cls is not None, f"{kind} {name!r} ({obj!r}) has no Params (a params.Params subclass)"
    return cls


def _expressible(value: Any) -> bool:
    """Whether a spec can write the value: not None or empty, no list element with the '+' separator."""
    if value is None or value == "" or value == []:
        return False
    return not (isinstance(value, list) and any("+" in str(x) for x in value))  # e.g. the regex \d+


def _spec_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize(("kind", "name"), _cases())
def test_has_params(kind: str, name: str) -> None:
    _params(kind, name)


@pytest.mark.parametrize(("kind", "name"), _cases())
def test_describe_documents_every_setting(kind: str, name: str) -> None:
    cls = _params(kind, name)
    docs = describe(cls)
    assert all(isinstance(d, ParamDoc) for d in docs)
    assert [d.name for d in docs] == list(cls.__dataclass_fields__)
    undocumented = [d.name for d in docs if not d.doc.strip()]
    assert not undocumented, f"{kind} {name!r}: settings without a doc: {undocumented}"
    assert sum(d.positional for d in docs) <= 1
    for d in docs:
        assert str(d).strip()


@pytest.mark.parametrize(("kind", "name"), _cases())
def test_bare_name_gives_the_defaults(kind: str, name: str) -> None:
    cls = _params(kind, name)
    docs = describe(cls)
    if any(d.positional and d.required for d in docs):
        pytest.skip(f"{name} needs a positional argument ({name}:<…>)")
    required = [d.name for d in docs if d.required]
    if required:  # the bare name must say what is missing, in one line
        with pytest.raises(SpecError, match=f"needs {required[0]}="):
            from_spec(cls, ComponentSpec(name))
        return
    params = from_spec(cls, ComponentSpec(name))
    key = to_key(params)
    assert json.loads(json.dumps(key)) == key
    # the defaults, written out as a spec, parse back to themselves (the grammar can express them)
    args = {k: _spec_text(v) for k, v in key.items() if _expressible(v)}
    assert from_spec(cls, ComponentSpec(name, args)) == params


@pytest.mark.parametrize(("kind", "name"), _cases(CHEAP_KINDS))
def test_constructs_with_defaults(kind: str, name: str, tmp_path) -> None:
    cls = _params(kind, name)
    if (kind, name) in NEEDS_A_MODEL:
        pytest.skip(f"{name} loads or needs a model")
    ctx = Context(cache_dir=tmp_path, quiet=True)
    obj = getattr(registry, kind).get(name)(parse_component(name), ctx)
    if kind == "datasets":
        assert len(obj) > 0 and obj.sha256
    else:
        assert obj.params == from_spec(cls, ComponentSpec(name))
