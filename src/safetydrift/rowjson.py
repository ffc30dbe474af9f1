"""How a typed record is written to JSON and read back: the machinery under every row of ``records.py``.

A row is a frozen dataclass whose JSON object has the fields' names, in order; nested rows, tuples,
mappings of rows and ``GenerationConfig`` are converted by their annotations. Reading is strict (an unknown
key, a missing required field or an unreadable format version is a ``DataError``), so a file is either
read whole or refused with one line. Kept apart so that ``records.py`` is the list of records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from functools import cache
from types import UnionType
from typing import Any, ClassVar, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from safetydrift.errors import DataError
from safetydrift.types import GenerationConfig

R = TypeVar("R", bound="_Row")


def _version(d: Mapping[str, Any], key: str, current: int, what: str) -> int:
    v = d.get(key, 1)
    if not isinstance(v, int) or not 1 <= v <= current:
        raise DataError(f"{what}: {key} {v!r} is not readable by this safetydrift (it reads 1 to {current})")
    return v


def _plain(v: Any) -> Any:
    """A field value as JSON data: rows by their ``to_json``, tuples as lists."""
    if isinstance(v, _Row):
        return v.to_json()
    if isinstance(v, GenerationConfig):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _typed(tp: Any, v: Any) -> Any:
    """JSON data as a field's annotated type: nested rows, tuples, mappings of rows, GenerationConfig."""
    origin, args = get_origin(tp), get_args(tp)
    if v is None:
        return None
    if origin is Literal:
        if v not in args:
            raise DataError(f"{v!r} is not one of {', '.join(map(str, args))}")
        return v
    if origin in (Union, UnionType):
        return _typed(next(a for a in args if a is not type(None)), v)
    if origin is tuple:
        items = list(v)
        return tuple(_typed(args[0] if args[-1] is Ellipsis else args[i], x) for i, x in enumerate(items))
    if origin is Mapping:
        return {k: _typed(args[1], x) for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, _Row):
        return tp.from_json(v)
    if tp is GenerationConfig:
        try:
            return GenerationConfig(**v)
        except TypeError as e:
            raise DataError(f"generation settings: {e}") from None
    return v


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


class _Row:
    """``to_json``/``from_json`` for a frozen dataclass whose JSON object has the fields' names, in order."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset()  # optional keys written only when set (not None/default)
    _format_key: ClassVar[str | None] = None  # "schema" / "format" for a top-level, versioned object
    _format: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {self._format_key: self._format} if self._format_key else {}
        for f in fields(cast(Any, self)):
            v = getattr(self, f.name)
            if not (f.name in self._omit_if_none and (v is None or v == f.default)):
                out[f.name] = _plain(v)
        return out

    @classmethod
    def from_json(cls: type[R], d: Any) -> R:
        """Read a JSON object: unknown keys, missing required fields and unreadable versions are errors."""
        if not isinstance(d, Mapping):
            raise DataError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        own = {f.name: f for f in fields(cast(Any, cls))}
        if cls._format_key:
            _version(d, cls._format_key, cls._format, cls.__name__)
        unknown = sorted(set(d) - set(own) - {cls._format_key})
        if unknown:
            raise DataError(f"{cls.__name__}: unknown field {unknown[0]!r}")
        missing = [n for n, f in own.items() if n not in d and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise DataError(f"{cls.__name__}: missing field {missing[0]!r}")
        hints = _hints(cast(type, cls))
        return cls(**{k: _typed(hints[k], v) for k, v in d.items() if k in own})
