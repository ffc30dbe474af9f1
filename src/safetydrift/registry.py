"""Registries, one per kind of component, each backed by one explicit table.

A table maps a component's name to ``"module:Object"``. Lookup imports that one module on first use, so
``import safetydrift`` stays cheap and torch, llama.cpp or ray are only imported by the component that
needs them. A module that fails to import raises :class:`ComponentImportError`: a typo or a missing
dependency must never make a component silently vanish. Third-party code may still add components at
run time with the ``register`` decorator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from safetydrift.errors import ComponentImportError, UnknownComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    help: str


def _first_line(obj: Any) -> str:
    return (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]


class Registry(Generic[T]):
    def __init__(self, kind: str, table: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._table: dict[str, str] = dict(table or {})
        for name, target in self._table.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: table entry {target!r} is not 'module:Object'")
        self._entries: dict[str, Entry[T]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        """Add a component at run time (plugins, tests), or give a table entry its one-line help."""

        def deco(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing.obj is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if help:
                self._help[name] = help
            if name not in self._table:
                self._entries[name] = Entry(name, obj, help or _first_line(obj))
            return obj

        return deco

    def _load(self, name: str) -> Entry[T]:
        if name in self._entries:
            return self._entries[name]
        module_name, attr = self._table[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ComponentImportError(f"{self.kind} {name!r}: cannot import {module_name}: {e}") from e
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise ComponentImportError(f"{self.kind} {name!r}: {module_name} has no {attr!r}") from None
        entry = Entry(name, obj, self._help.get(name) or _first_line(obj))
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._table and name not in self._entries:
            known = ", ".join(self.names()) or "none"
            raise UnknownComponentError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._load(name).obj

    def __contains__(self, name: str) -> bool:
        return name in self._table or name in self._entries

    def names(self) -> list[str]:
        return sorted({*self._table, *self._entries})

    def entries(self) -> list[Entry[T]]:
        """Every component, each module imported (for listings and conformance tests)."""
        return [self._load(n) for n in self.names()]

    def target(self, name: str) -> str | None:
        """The ``module:Object`` a built-in name points at (None for a run-time registration)."""
        return self._table.get(name)


_P = "safetydrift."

sources: Registry = Registry(
    "model source",
    {
        "smollm2-135m-instruct": _P + "sources.shipped:smollm2",
        "qwen2.5-coder-0.5b-instruct": _P + "sources.shipped:qwen",
        "hf": _P + "sources.hf:hf",
        "gguf": _P + "sources.gguf:gguf",
        "openai": _P + "sources.openai:openai",
        "tiny-random": _P + "sources.tiny:tiny_random",
    },
)
transforms: Registry = Registry(
    "transform",
    {
        "align": _P + "variants.align:Align",
        "finetune": _P + "variants.finetune:Finetune",
        "bitdelta": _P + "variants.bitdelta:BitDelta",
        "quantize": _P + "variants.quantize:Quantize",
    },
)
guards: Registry = Registry(
    "guard filter",
    {
        "keyword": _P + "guards.keyword:KeywordFilter",
        "classifier": _P + "guards.classifier:ClassifierFilter",
        "perplexity": _P + "guards.perplexity:PerplexityFilter",
        "smoothllm": _P + "guards.smoothllm:SmoothLLMFilter",
        "llm": _P + "guards.llm:LLMFilter",
    },
)
backends: Registry = Registry(
    "backend",
    {
        "transformers": _P + "backends.transformers_backend:transformers_backend",
        "openai": _P + "backends.openai_http:openai_backend",
        "llamacpp": _P + "backends.llamacpp:llamacpp",
        "vllm": _P + "backends.vllm_backend:vllm",
    },
)
datasets: Registry = Registry(
    "dataset",
    {
        "advbench": _P + "datasets.builtin:advbench",
        "advbench50": _P + "datasets.builtin:advbench50",
        "advbench-heldout": _P + "datasets.builtin:advbench_heldout",
        "benign": _P + "datasets.builtin:benign",
        "benign-task": _P + "datasets.builtin:benign_task",
        "donotanswer": _P + "datasets.builtin:donotanswer",
        "benign-lookalike": _P + "datasets.builtin:benign_lookalike",
        "manipulation": _P + "datasets.builtin:manipulation",
        "mc-utility": _P + "datasets.builtin:mc_utility",
    },
)
attacks: Registry = Registry(
    "attack",
    {
        "direct": _P + "attacks.direct:DirectAttack",
        "template": _P + "attacks.templates:TemplateAttack",
        "backdoor": _P + "attacks.backdoor:BackdoorAttack",
        "tap": _P + "attacks.tap:TapAttack",
        "pair": _P + "attacks.tap:PairAttack",
    },
)
judges: Registry = Registry(
    "judge",
    {
        "keyword": _P + "judges.keyword:keyword",
        "classifier": _P + "judges.classifier:classifier",
        "refusal": _P + "judges.trained:RefusalJudge",
        "harm": _P + "judges.trained:HarmJudge",
        "exact-match": _P + "judges.exact:exact_match",
        "manipulation": _P + "judges.manipulation:manipulation",
        "tap-rating": _P + "judges.llm:tap_rating",
        "tap-evaluator": _P + "judges.tap_verdict:tap_evaluator",
        "harmfulness": _P + "judges.llm:harmfulness",
        "strongreject": _P + "judges.llm:strongreject",
        "harmbench": _P + "judges.harmbench:harmbench",
        "llamaguard": _P + "judges.llamaguard:llamaguard",
    },
)

KINDS: dict[str, Registry] = {
    "sources": sources,
    "transforms": transforms,
    "guards": guards,
    "backends": backends,
    "datasets": datasets,
    "attacks": attacks,
    "judges": judges,
}
