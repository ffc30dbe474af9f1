"""Fail fast: every name a spec uses is registered, checked before anything is built, loaded or written.

One rule for the CLI (``eval``'s ``--model``/``--attack``/``--judge``) and for experiments (every variant,
attack and judge of the YAML), so a typo is the same one-line error wherever it is written.
"""

from __future__ import annotations

from safetydrift import registry
from safetydrift.spec import ComponentSpec, Recipe, parse_component, parse_recipe

__all__ = ["check_component", "check_recipe"]



def _check_settings(obj: object, spec: ComponentSpec) -> None:
    """A component's typed settings parse (unknown key, bad type, out of range): one line, nothing built."""
    params_cls = getattr(obj, "Params", None)
    if params_cls is not None:
        from safetydrift.params import from_spec

        from_spec(params_cls, spec)


def check_recipe(text: str) -> Recipe:
    """Parse a recipe and check its source, every transform and every guard with their settings."""
    from safetydrift.guards.spec import GUARD_STEP, parse_guard_step

    r = parse_recipe(text)
    _check_settings(registry.sources.get(r.model.name), r.model)
    for t in r.transforms:
        if t.name == GUARD_STEP:  # a serving wrapper, not a transform
            parse_guard_step(t)
        else:
            _check_settings(registry.transforms.get(t.name), t)
    return r


def check_component(kind: str, text: str) -> ComponentSpec:
    """Parse a component spec and look its name up in the registry of ``kind`` ("attacks", "judges", ...)."""
    if kind not in registry.KINDS:
        raise ValueError(f"unknown component kind {kind!r} (known: {', '.join(sorted(registry.KINDS))})")
    comp = parse_component(text)
    _check_settings(registry.KINDS[kind].get(comp.name), comp)
    return comp
