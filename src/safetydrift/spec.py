"""The one spec grammar used everywhere.

A *component* is ``name`` or ``name:key=value,key=value``. A *recipe* chains transforms after a model
spec with ``>``: ``smollm2-135m-instruct>align>finetune:data=harmful,method=lora``.

Sources may take one leading positional argument (``hf:/path/to/dir``, ``gguf:model.gguf``,
``openai:http://127.0.0.1:8000/v1#my-model``). A value that itself contains ``,`` or ``>`` (a nested
spec, e.g. a TAP attacker) is wrapped in square brackets: ``tap:attacker=[hf:/m,system=Hi],depth=3``.

Errors name the offending token so that a user can fix a long command line quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from safetydrift.errors import SpecError
from safetydrift.params import parse_scalar

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside square brackets; raise on unbalanced brackets."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ']' in {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced '[' in {text!r}")
    parts.append("".join(cur))
    return parts


def _unwrap(value: str) -> str:
    if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
        return value[1:-1]
    return value


@dataclass(frozen=True)
class ComponentSpec:
    """``name:key=value,...`` parsed. ``positional`` holds a leading bare argument, if any."""

    name: str
    args: dict[str, str] = field(default_factory=dict)
    positional: str | None = None

    def __str__(self) -> str:
        items: list[str] = []
        if self.positional is not None:  # a path with ',' or '>' keeps its brackets, so str() re-parses
            pos = self.positional
            items.append(f"[{pos}]" if any(c in pos for c in ",>") else pos)
        for k in sorted(self.args):
            v = self.args[k]
            if any(c in v for c in ",>") and not (v.startswith("[") and v.endswith("]")):
                v = f"[{v}]"
            items.append(f"{k}={v}")
        return self.name if not items else f"{self.name}:{','.join(items)}"

    # -- typed accessors, for components not yet converted to ``params.Params`` (prefer ``from_spec``) --
    def get_str(self, key: str, default: str | None = None) -> str | None:
        return self.args.get(key, default)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        return self._typed(key, int, default)

    def get_float(self, key: str, default: float | None = None) -> float | None:
        return self._typed(key, float, default)

    def get_bool(self, key: str, default: bool = False) -> bool:
        return bool(self._typed(key, bool, default))

    def _typed(self, key: str, base: type, default: Any) -> Any:
        """Same coercion and messages as ``params.from_spec``: one rule for what a number is."""
        return default if key not in self.args else parse_scalar(self.name, key, self.args[key], base)

    def get_list(self, key: str, default: list[str] | None = None, sep: str = "+") -> list[str]:
        """Lists inside a spec use '+' (commas already separate settings): ``targets=q_proj+v_proj``."""
        if key not in self.args:
            return list(default or [])
        return [x for x in self.args[key].split(sep) if x]

    def check_keys(self, allowed: set[str] | list[str] | tuple[str, ...]) -> None:
        """Reject settings a component does not know: a typo must not silently fall back to a default."""
        unknown = sorted(set(self.args) - set(allowed))
        if unknown:
            raise SpecError(
                f"{self.name}: unknown setting '{unknown[0]}' (known: {', '.join(sorted(allowed)) or 'none'})"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(sorted(self.args.items())), "positional": self.positional}


def parse_component(text: str, *, allow_positional: bool = False) -> ComponentSpec:
    """Parse ``name`` or ``name:key=value,...``; errors name the bad token."""
    text = text.strip()
    if not text:
        raise SpecError("empty spec")
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"bad name {name!r} in spec {text!r}")
    if not sep:
        return ComponentSpec(name=name)
    if not rest:
        raise SpecError(f"empty settings after '{name}:' in spec {text!r}")
    args: dict[str, str] = {}
    positional: str | None = None
    tokens = _split_top(rest, ",")
    for i, tok in enumerate(tokens):
        if "=" not in tok or (tok.startswith("[") and tok.endswith("]")):
            if allow_positional and i == 0 and tok:
                positional = _unwrap(tok)
                continue
            if allow_positional and i == 0:
                raise SpecError(f"empty argument after '{name}:' in spec {text!r}")
            raise SpecError(f"bad token {tok!r} in spec {text!r}: expected key=value")
        key, _, value = tok.partition("=")
        key = key.strip()
        if not _KEY.match(key):
            raise SpecError(f"bad key {key!r} in token {tok!r} of spec {text!r}")
        if value == "":
            raise SpecError(f"empty value in token {tok!r} of spec {text!r}")
        if key in args:
            raise SpecError(f"duplicate key {key!r} in spec {text!r}")
        args[key] = _unwrap(value)
    return ComponentSpec(name=name, args=args, positional=positional)


@dataclass(frozen=True)
class Recipe:
    """A model spec followed by zero or more transforms."""

    model: ComponentSpec
    transforms: tuple[ComponentSpec, ...] = ()

    def __str__(self) -> str:
        return ">".join([str(self.model), *(str(t) for t in self.transforms)])

    @property
    def parent(self) -> Recipe | None:
        """The recipe one transform shorter (the variant this one was built from)."""
        if not self.transforms:
            return None
        return Recipe(self.model, self.transforms[:-1])

    def prefixes(self) -> list[Recipe]:
        """Every recipe along the chain, base first, this one last."""
        return [Recipe(self.model, self.transforms[:i]) for i in range(len(self.transforms) + 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "transforms": [t.to_dict() for t in self.transforms]}


def parse_recipe(text: str) -> Recipe:
    text = text.strip()
    if not text:
        raise SpecError("empty model spec")
    parts = _split_top(text, ">")
    for i, p in enumerate(parts):
        if not p.strip():
            raise SpecError(f"empty step #{i} in recipe {text!r}")
    model = parse_component(parts[0], allow_positional=True)
    transforms = tuple(parse_component(p) for p in parts[1:])
    return Recipe(model=model, transforms=transforms)


def recipe_from_yaml(obj: Any) -> Recipe:
    """A recipe written in YAML: a string, or ``{model: ..., transforms: [name | {name: {k: v}}]}``."""
    if isinstance(obj, str):
        return parse_recipe(obj)
    if not isinstance(obj, dict) or "model" not in obj:
        raise SpecError(f"a variant must be a recipe string or a mapping with 'model': got {obj!r}")
    model = parse_component(str(obj["model"]), allow_positional=True)
    steps: list[ComponentSpec] = []
    for step in obj.get("transforms", []) or []:
        if isinstance(step, str):
            steps.append(parse_component(step))
        elif isinstance(step, dict) and len(step) == 1:
            (name, settings), = step.items()
            if settings is None:
                settings = {}
            if not isinstance(settings, dict):
                raise SpecError(f"settings of transform {name!r} must be a mapping")
            base = parse_component(str(name))
            steps.append(ComponentSpec(base.name, {str(k): _yaml_value(v) for k, v in settings.items()}))
        else:
            raise SpecError(f"bad transform entry {step!r}")
    return Recipe(model, tuple(steps))


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "+".join(str(x) for x in v)
    return str(v)


def split_recipe_steps(text: str) -> list[str]:
    """A recipe's steps as written (model first), splitting on top-level ``>`` only."""
    return [x.strip() for x in _split_top(text, ">")]
