"""Typed component settings: a component's ``Params`` dataclass is its config schema.

Every registered component (source, transform, backend, dataset, attack, judge) declares its settings
once, as a frozen dataclass, and reads them with :func:`from_spec`. That one class is the parser (the
strings of ``name:key=value`` become typed values), the validator (an unknown key, a bad type or an
out-of-range number is a one-line ``SpecError``), the help text (:func:`describe`) and, for transforms,
the artifact cache key (:func:`to_key`). Nothing is parsed by hand, so nothing drifts out of sync.

One rule for numbers
--------------------
- Counts (``n``, ``batch``, ``epochs``, ``steps``, ``layers``, ``limit``, ``runs``, ``depth``, ``width``…)
  are ≥ 1. ``0`` is an error, never "use the default": leave a setting out to get its default. A count
  for which 0 means *none* (``retries``, ``n_benign``; ``group=0`` = one group per row) says so with
  ``ge=0`` and in its doc.
- Seeds are ≥ 0, temperatures ≥ 0, probabilities and fractions in [0, 1], learning rates > 0.
- Floats must be finite.

How to convert a component
--------------------------
1. Declare its settings (frozen and keyword-only, so required settings may follow optional ones)::

       @dataclass(frozen=True, kw_only=True)
       class MyParams(Params):
           n: int = field(default=100, metadata=p("items to take", ge=1))
           mode: Literal["fast", "exact"] = field(default="fast", metadata=p("how to match"))
           targets: tuple[str, ...] = field(default=("q_proj",), metadata=p("module names, a+b"))
           judge: str = field(metadata=p("judge model recipe"))          # required: no default
           path: str = field(metadata=p("checkpoint", positional=True))  # a source's ``hf:<path>``

   Types: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``tuple[X, ...]`` (written ``a+b``)
   and ``X | None`` (None = not given). A nested spec (``attacker=[m>align]``) is a plain ``str``.
   ``choices=`` suits a ``str`` whose options live in a table (``choices=tuple(LISTS)``). Choices match
   case-insensitively and are stored as declared. A subclass changes an inherited default with
   ``lr: float = override(Base, "lr", 1e-4)``.
2. Attach it: a class sets ``Params = MyParams``; a factory function is decorated
   ``@with_params(MyParams)``. Keep the registry entry's name.
3. In the constructor, ``self.params = from_spec(self.Params, spec)`` (``Attack`` and ``Transform`` do it
   for a subclass that has ``Params``), then delete ``check_keys`` and the ``get_int``/``get_str`` calls.
4. Rules between settings, and defaults that depend on another setting, go in ``__post_init__``: call
   ``super().__post_init__()``, raise ``SpecError`` naming the component, set derived values with
   ``object.__setattr__``.
5. A transform's cache key is ``to_key(transform.params)`` plus ``key_material()``: keep no attribute only
   to get it into the hash; a constant that must invalidate old artifacts (a format number) goes in
   ``key_material``.
6. ``tests/test_conformance.py`` covers every registered component: drop the component's ``xfail`` there.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

from safetydrift.errors import SpecError

if TYPE_CHECKING:
    from safetydrift.spec import ComponentSpec

P = TypeVar("P", bound="Params")
F = TypeVar("F")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_SCALARS: tuple[type, ...] = (int, float, bool, str)


def p(
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    positional: bool = False,
    keyed_unless: Any = None,
) -> dict[str, Any]:
    """Field metadata: the help line and the allowed range (``field(default=1, metadata=p(...))``).

    ``keyed_unless``: a setting added after artifacts were built with the behaviour of this value; at this value
    it stays out of the cache key (:func:`to_key`), so those artifacts keep their keys. It names the old
    behaviour, not the default: a later default change (or an ``override``) is still a new key."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "choices": None if choices is None else tuple(choices),
            "positional": positional}
    if keyed_unless is not None:
        meta["keyed_unless"] = keyed_unless
    return meta


def override(base: type[Params], name: str, default: Any) -> Any:
    """The field ``name`` of ``base`` with another default: docs and range stay defined once."""
    meta = {f.name: f for f in fields(base)}[name].metadata
    return field(default=default, metadata=meta)


def with_params(cls: type[Params]) -> Callable[[F], F]:
    """Attach ``Params`` to a factory function, so that registries can list and check its settings."""

    def deco(fn: F) -> F:
        fn.Params = cls  # type: ignore[attr-defined]
        return fn

    return deco


# ------------------------------------------------------------------------------------------ types

@dataclass(frozen=True)
class _Type:
    """A field's annotation, reduced to what a spec string can express."""

    base: type  # int, float, bool or str
    optional: bool = False
    many: bool = False  # tuple[base, ...]
    literal: tuple[Any, ...] | None = None

    def text(self) -> str:
        one = "|".join(map(str, self.literal)) if self.literal else self.base.__name__
        return f"{one}+…" if self.many else one


def _analyse(tp: Any, where: str) -> _Type:
    optional = many = False
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{where}: only 'X | None' unions are supported, not {tp!r}")
        optional, tp = True, args[0]
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: lists are tuple[X, ...], not {tp!r}")
        many, tp = True, args[0]
    literal = None
    if get_origin(tp) is Literal:
        literal = get_args(tp)
        kinds = {type(x) for x in literal}
        if len(kinds) != 1:
            raise TypeError(f"{where}: Literal choices must share one type")
        tp = kinds.pop()
    if tp not in _SCALARS:
        raise TypeError(f"{where}: unsupported setting type {tp!r}")
    return _Type(tp, optional, many, literal)


@cache
def _schema(cls: type[Params]) -> dict[str, tuple[Any, _Type]]:
    """name → (dataclasses.Field, _Type), in declaration order; annotations resolved once per class."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, _analyse(hints[f.name], f"{cls.__name__}.{f.name}")) for f in fields(cls)}


def _choices(f: Any, t: _Type) -> tuple[Any, ...] | None:
    return f.metadata.get("choices") or t.literal


# ------------------------------------------------------------------------------------- coercion

def parse_scalar(component: str, key: str, text: str, base: type) -> Any:
    """One string → int, float, bool or str; the one place that says what a number or boolean is."""
    bad = f"{component}: '{key}={text}'"
    if base is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SpecError(f"{bad} is not a boolean (true/false)")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise SpecError(f"{bad} is not an integer") from None
    if base is float:
        try:
            v = float(text)
        except ValueError:
            raise SpecError(f"{bad} is not a number") from None
        if not math.isfinite(v):
            raise SpecError(f"{bad} is not a finite number")
        return v
    return text


def _range_text(meta: Any) -> str:
    ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
    lo = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else None
    if lo is not None and le is not None:
        return f"in {lo}, {le:g}]"
    if ge is not None:
        return f"≥ {ge:g}"
    if gt is not None:
        return f"> {gt:g}"
    return f"≤ {le:g}" if le is not None else ""


def _problem(value: Any, f: Any, t: _Type) -> str | None:
    """Why one (non-None) element of a field's value is not allowed, or None."""
    ok_types = (int, float) if t.base is float else (t.base,)
    if not isinstance(value, ok_types) or (t.base is not bool and isinstance(value, bool)):
        return f"is not {'a' if t.base is not int else 'an'} {t.text()}"
    choices = _choices(f, t)
    if choices is not None and value not in choices:
        return f"is not one of {', '.join(map(str, choices))}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        m = f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            return "is not a finite number"
        if (m.get("ge") is not None and value < m["ge"]) or (m.get("gt") is not None and value <= m["gt"]) \
                or (m.get("le") is not None and value > m["le"]):
            hint = " (leave it out for the default)" if value == 0 and f.default is not MISSING and not t.many else ""
            return f"must be {_range_text(m)}{hint}"
    return None


def _canonical_choice(text: str, choices: tuple[Any, ...]) -> Any:
    if text in choices:
        return text
    folded = [c for c in choices if isinstance(c, str) and c.lower() == text.lower()]
    return folded[0] if len(folded) == 1 else None


def _convert(component: str, key: str, text: str, f: Any, t: _Type, shown: str) -> Any:
    parts = [x for x in text.split("+") if x] if t.many else [text]
    out: list[Any] = []
    choices = _choices(f, t)
    for part in parts:
        value = parse_scalar(component, key, part, t.base)
        if choices is not None and t.base is str:
            canon = _canonical_choice(value, choices)
            if canon is None:
                raise SpecError(f"{component}: unknown {key} {part!r} (known: {', '.join(map(str, choices))})")
            value = canon
        if (why := _problem(value, f, t)) is not None:  # a list names its bad element, like parse_scalar
            where = f"'{key}={part}'" if t.many else shown
            raise SpecError(f"{component}: {where} {why}")
        out.append(value)
    return tuple(out) if t.many else out[0]


# ---------------------------------------------------------------------------------------- Params

@dataclass(frozen=True, kw_only=True)
class Params:
    """Base of every component's settings. Subclass it as ``@dataclass(frozen=True, kw_only=True)``."""

    def __post_init__(self) -> None:
        """Normalise (int → float, list → tuple) and check every field, however the object was made."""
        for name, (f, t) in _schema(type(self)).items():
            value = getattr(self, name)
            if value is None and t.optional:
                continue
            if t.many and isinstance(value, list):
                value = tuple(value)
            items = value if t.many and isinstance(value, tuple) else (value,)
            if t.base is float:
                items = tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in items)
            for x in items:
                if (why := _problem(x, f, t)) is not None:
                    raise SpecError(f"{type(self).__name__}: {name}={x!r} {why}")
            object.__setattr__(self, name, tuple(items) if t.many else items[0])


@dataclass(frozen=True, kw_only=True)
class NoParams(Params):
    """The settings of a component that takes none: any key is an error."""


def from_spec(cls: type[P], spec: ComponentSpec) -> P:
    """``cls`` from a parsed spec: strings coerced to the annotated types, unknown keys, bad types,
    out-of-range values and missing required settings raised as one-line ``SpecError``s."""
    name = spec.name
    schema = _schema(cls)
    positional = next((k for k, (f, _) in schema.items() if f.metadata.get("positional")), None)
    keys = [k for k in schema if k != positional]
    unknown = sorted(set(spec.args) - set(keys))
    if unknown:
        raise SpecError(f"{name}: unknown setting '{unknown[0]}' (known: {', '.join(sorted(keys)) or 'none'})")
    values: dict[str, Any] = {}
    if spec.positional is not None:
        if positional is None:
            raise SpecError(f"{name}: takes no positional argument (got {spec.positional!r})")
        f, t = schema[positional]
        values[positional] = _convert(name, positional, spec.positional, f, t, f"'{name}:{spec.positional}'")
    for key, text in spec.args.items():
        f, t = schema[key]
        values[key] = _convert(name, key, text, f, t, f"'{key}={text}'")
    for key, (f, _) in schema.items():
        if key not in values and f.default is MISSING and f.default_factory is MISSING:
            doc = f.metadata.get("doc", key)
            if key == positional:
                raise SpecError(f"{name}: needs {doc}")
            raise SpecError(f"{name}: needs {key}=<{doc}>")
    return cls(**values)


def params_class(obj: Any) -> type[Params] | None:
    """The ``Params`` class a component declares, or None if it has none (yet)."""
    cls = getattr(obj, "Params", None)
    return cls if isinstance(cls, type) and issubclass(cls, Params) else None


# ------------------------------------------------------------------------------------ help, keys

@dataclass(frozen=True)
class ParamDoc:
    """One setting, for help output."""

    name: str
    type: str
    default: Any  # None when required
    doc: str
    constraint: str  # "≥ 1", "in [0, 1]", "one of a, b" or ""
    required: bool = False
    positional: bool = False

    def __str__(self) -> str:
        head = f"<{self.name}>" if self.positional else f"{self.name}={self.type}"
        tail = "required" if self.required else f"default {_show(self.default)}"
        extra = f"; {self.constraint}" if self.constraint else ""
        return f"{head}  {self.doc} ({tail}{extra})"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(map(str, value)) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "(none)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def describe(cls: type[Params]) -> list[ParamDoc]:
    """Every setting of ``cls``: name, type as text, default, doc, constraint (declaration order)."""
    out = []
    for name, (f, t) in _schema(cls).items():
        required = f.default is MISSING and f.default_factory is MISSING
        default = None if required else f.default_factory() if f.default is MISSING else f.default
        choices = _choices(f, t)
        if choices is not None and not t.literal:
            constraint = f"one of {', '.join(map(str, choices))}"
        else:
            constraint = _range_text(f.metadata)
        out.append(ParamDoc(name, t.text(), default, f.metadata.get("doc", ""), constraint, required,
                            bool(f.metadata.get("positional"))))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def to_key(params: Params, of: type[Params] | None = None) -> dict[str, Any]:
    """Every setting, resolved and canonical (sorted, JSON-able): what a cache key hashes.

    ``of`` restricts the key to the fields of a base class (e.g. the SFT settings of a finetune).
    """
    keep = [f.name for f in fields(of or params)
            if not ("keyed_unless" in f.metadata and getattr(params, f.name) == f.metadata["keyed_unless"])]
    return {k: _jsonable(getattr(params, k)) for k in sorted(keep)}
