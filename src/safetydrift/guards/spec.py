"""A ``guard:...`` recipe step → a typed :class:`GuardConfig`.

The step keeps its place in the recipe string (and so in the artifact and run keys) exactly as before;
what it turns into is a serving configuration, not a transform. Which filters exist, on which side, and
which settings belong to which filter all come from the filter classes in ``registry.guards``: the guard's
own keys are :class:`GuardParams`, every other key belongs to the ``Params`` of the filters that declare
it, and each chosen filter parses only its own keys (``params.from_spec``: one rule for ranges).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from safetydrift import registry
from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.guards.base import REFUSAL, SIDES, Side
from safetydrift.params import Params, from_spec, p
from safetydrift.spec import ComponentSpec

if TYPE_CHECKING:
    from safetydrift.guards.base import GuardFilter

#: The recipe step name that adds a guard (``model>...>guard:input=keyword``).
GUARD_STEP = "guard"
_FIXED = frozenset({"type", "spec", "input", "output", "refusal", "seed"})


@dataclass(frozen=True, kw_only=True)
class GuardParams(Params):
    """The guard's own keys; every other key of a ``guard:`` step belongs to a filter."""

    input: tuple[str, ...] = field(default=(), metadata=p("input filters, applied in order (a+b)"))
    output: tuple[str, ...] = field(default=(), metadata=p("output filters, applied in order (a+b)"))
    seed: int = field(default=0, metadata=p("seed of the randomised filters (smoothllm)", ge=0))


_OWN_KEYS = tuple(f.name for f in fields(GuardParams))


@dataclass(frozen=True)
class GuardConfig:
    """A parsed guard: its filters per side (in order) and every filter setting after defaults."""

    spec: str
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    refusal: str = REFUSAL

    def filters(self) -> list[tuple[Side, str]]:
        return [("input", n) for n in self.input] + [("output", n) for n in self.output]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in ``ResolvedModel.wrappers``, hashed into run keys and recorded in provenance."""
        d = {"type": GUARD_STEP, "spec": self.spec, "input": list(self.input), "output": list(self.output),
             "refusal": self.refusal, **self.settings, "seed": self.seed}
        return json.loads(json.dumps(d))  # a copy, and proof that it serialises

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GuardConfig:
        if d.get("type") != GUARD_STEP:
            raise UnsupportedError(f"unknown serving wrapper {d.get('type')!r}")
        return cls(spec=str(d["spec"]), input=tuple(d.get("input", ())), output=tuple(d.get("output", ())),
                   settings={k: v for k, v in d.items() if k not in _FIXED}, seed=int(d.get("seed") or 0),
                   refusal=str(d.get("refusal", REFUSAL)))


def filter_classes() -> dict[str, type[GuardFilter]]:
    """Every registered guard filter by name (imports the filter modules; their heavy imports stay lazy)."""
    return {name: registry.guards.get(name) for name in registry.guards.names()}


def parse_guard_step(spec: ComponentSpec) -> GuardConfig:
    """Validate a ``guard:`` step; every error is a one-line :class:`SpecError` naming the fix."""
    classes = filter_classes()
    spec.check_keys({*_OWN_KEYS, *(key for cls in classes.values() for key in cls.settings)})
    own = from_spec(GuardParams, ComponentSpec(GUARD_STEP, {k: v for k, v in spec.args.items() if k in _OWN_KEYS}))
    chosen = {"input": list(own.input), "output": list(own.output)}
    known = {side: [n for n, cls in classes.items() if side in cls.sides] for side in SIDES}
    if not any(chosen.values()):
        raise SpecError("guard: give input=<filters> and/or output=<filters> "
                        f"(input: {'+'.join(known['input'])}; output: {'+'.join(known['output'])})")
    for side in SIDES:
        names = chosen[side]
        for n in names:
            if n not in known[side]:
                raise SpecError(f"guard: unknown {side} filter {n!r} (known: {', '.join(known[side])})")
        if len(set(names)) != len(names):
            raise SpecError(f"guard: {side} filter listed twice in {'+'.join(names)!r}")
    used = {(side, n) for side in SIDES for n in chosen[side]}
    for key in sorted(spec.args):
        owners = [(side, n) for n, cls in classes.items() for side in SIDES if side in cls.settings.get(key, ())]
        if owners and not used.intersection(owners):
            raise SpecError(f"guard: '{key}' needs the filter {' or '.join(f'{s}:{n}' for s, n in owners)}")
    settings: dict[str, Any] = {}
    for n, cls in classes.items():
        sides = frozenset(side for side, m in used if m == n)
        if sides:
            mine = ComponentSpec(f"guard {n}", {k: v for k, v in spec.args.items() if k in cls.settings})
            settings.update(cls.configure(from_spec(cls.Params, mine), sides))
    return GuardConfig(spec=str(spec), input=own.input, output=own.output, settings=settings, seed=own.seed)
