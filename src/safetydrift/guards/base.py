"""The guard filter interface, and the small helpers that keep each filter a few lines.

A filter class declares what the guard needs to know about it, so that no list of names elsewhere has to
agree with it: the ``sides`` it can sit on (``input``: before the model, ``output``: after it), what it
``needs`` to be opened (the ``inner`` backend, the ``model``, the ``ctx``: it receives exactly those as
keyword arguments), and its settings as a typed ``Params`` class (``safetydrift.params``: one rule for
types, ranges, defaults and help). A setting means something on every side of the filter unless
``side_of`` narrows it; ``settings`` (key → sides) is derived from the two. The guard parses and checks
the settings when the recipe is parsed, long before anything is loaded; :meth:`GuardFilter.configure`
turns them into the JSON serving configuration that run keys hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import fields
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from safetydrift.errors import SpecError
from safetydrift.params import NoParams, to_key
from safetydrift.params import Params as ParamsBase  # the attribute below is called Params

if TYPE_CHECKING:
    from safetydrift.guards.spec import GuardConfig
    from safetydrift.types import Conversation, GenerationConfig

Side = Literal["input", "output"]
Need = Literal["inner", "model", "ctx"]
SIDES: tuple[Side, ...] = ("input", "output")
NEEDS: tuple[Need, ...] = ("inner", "model", "ctx")

#: What a guard answers instead of the model when a filter flags a request or an answer.
REFUSAL = "I'm sorry, but I can't help with that request."

Flags = list[str | None]  # one entry per conversation: None passes, a string flags it (the reason)


class GuardFilter:
    """One check of a guard, on the input side (the request) or the output side (the answer)."""

    name: ClassVar[str] = "filter"
    sides: ClassVar[frozenset[Side]] = frozenset()
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: the filter's settings (spec keys of the ``guard:`` step), typed, with ranges, defaults and docs
    Params: ClassVar[type[ParamsBase]] = NoParams
    #: settings that mean something on some of the filter's sides only (the rest: on every side)
    side_of: ClassVar[Mapping[str, frozenset[Side]]] = {}
    #: spec key -> the sides on which the key means something (derived from Params and side_of); giving a
    #: key without a filter on such a side is a typo
    settings: ClassVar[Mapping[str, frozenset[Side]]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = [f.name for f in fields(cls.Params)]
        stray = sorted(set(cls.side_of) - set(names))
        if stray:
            raise TypeError(f"{cls.__name__}.side_of names settings its Params lacks: {stray}")
        cls.settings = MappingProxyType({n: frozenset(cls.side_of.get(n, cls.sides)) for n in names})

    def __init__(self, side: Side, guard: GuardConfig) -> None:
        if side not in self.sides:
            raise SpecError(f"guard: {self.name} is not an {side} filter")
        self.side = side
        self.guard = guard

    @classmethod
    def configure(cls, params: ParamsBase, sides: frozenset[Side]) -> dict[str, Any]:
        """The serving configuration (JSON-able) from the parsed settings: those that mean something on
        the ``sides`` the filter is used on. Hashed into run keys, so a filter adds what identifies its
        data (e.g. a file's sha256) and never a setting that does nothing on those sides."""
        key = to_key(params)
        return {k: key[k] for k, on in cls.settings.items() if on & sides}

    def check(self, convs: list[Conversation], answers: list[str] | None, config: GenerationConfig) -> Flags:
        """Flags for a batch: requests on the input side, the model's ``answers`` on the output side."""
        if self.side == "input":
            return self.check_requests(convs, config)
        return self.check_answers(convs, answers or [], config)

    def check_requests(self, convs: list[Conversation], config: GenerationConfig) -> Flags:
        raise NotImplementedError(f"{self.name}: no input side")

    def check_answers(self, convs: list[Conversation], answers: list[str], config: GenerationConfig) -> Flags:
        raise NotImplementedError(f"{self.name}: no output side")


class InputFilter(GuardFilter):
    """A filter that only looks at requests, before the model is called."""

    sides: ClassVar[frozenset[Side]] = frozenset({"input"})


class OutputFilter(GuardFilter):
    """A filter that only looks at the model's answers (and the request they answer)."""

    sides: ClassVar[frozenset[Side]] = frozenset({"output"})


# ----------------------------------------------------------------------------------- helpers
def user_text(conv: Conversation) -> str:
    """The last user message: what an input filter checks and what the answer is judged against."""
    for m in reversed(conv):
        if m.get("role") == "user":
            return m.get("content", "")
    return ""


def replace_user(conv: Conversation, text: str) -> Conversation:
    """A copy of ``conv`` whose last user message is ``text`` (system prompt and history kept)."""
    out = [dict(m) for m in conv]
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = text
            break
    return out


def is_refusal(text: str) -> bool:
    """The keyword judge's refusal strings (Qi et al. 2023): one definition of "refused" for the guard."""
    from safetydrift.judges.keyword import QI_2023, find_refusal

    return bool(find_refusal(text, QI_2023))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@cache
def data_text(name: str) -> str:
    """A data file shipped next to the filters (``guards/data/<name>``): cue lists and prompts are data."""
    return resources.files("safetydrift.guards").joinpath("data").joinpath(name).read_text(encoding="utf-8")
