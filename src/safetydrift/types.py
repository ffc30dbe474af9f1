"""Core records and interfaces that flow through the pipeline.

source → (variants) → backend → attack → judge → stats → store → report. Each stage talks to the
next only through these types, so a new component is one module plus a registry decorator.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from safetydrift.errors import SpecError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
Conversation = list[Message]

Label = Literal["success", "fail", "unscorable"]
SUCCESS: Label = "success"
FAIL: Label = "fail"
UNSCORABLE: Label = "unscorable"


def with_system_prompt(conv: Conversation, system_prompt: str | None) -> Conversation:
    """The conversation every backend sends: the configured system prompt first, unless the
    conversation brings its own (one rule, so backends never disagree on what the model saw)."""
    msgs = [dict(m) for m in conv]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs = [{"role": "system", "content": system_prompt}, *msgs]
    return msgs


def text_id(text: str) -> str:
    """Stable item id: a hash of the text, so ids survive reordering and file edits elsewhere."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One evaluation item: a behavior/instruction, its harm category, an optional target string."""

    id: str
    prompt: str
    category: str = "uncategorized"
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, prompt: str, category: str | None = None, target: str | None = None, **meta: Any) -> Item:
        return cls(id=text_id(prompt), prompt=prompt, category=category or "uncategorized", target=target, meta=meta)


@dataclass(frozen=True)
class Dataset:
    name: str
    items: tuple[Item, ...]
    source: str  # file path or "package:<file>"
    sha256: str  # hash of the items' content, recorded with every result
    license: str = ""

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings shared by every backend. Greedy (temperature 0) unless told otherwise."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        """Checked once here, so that no backend, CLI flag or YAML file needs its own rule."""
        def number(v: Any, integer: bool = False) -> bool:
            kinds = (int,) if integer else (int, float)
            return isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v)

        if not number(self.max_new_tokens, integer=True) or self.max_new_tokens < 1:
            raise SpecError(f"generation: max_new_tokens must be an integer ≥ 1, not {self.max_new_tokens!r}")
        if not number(self.temperature) or self.temperature < 0:
            raise SpecError(f"generation: temperature must be ≥ 0, not {self.temperature!r}")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            raise SpecError(f"generation: top_p must be in (0, 1], not {self.top_p!r}")
        if not number(self.seed, integer=True):
            raise SpecError(f"generation: seed must be an integer, not {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **kw: Any) -> GenerationConfig:
        d = self.to_dict()
        d.update(kw)
        return GenerationConfig(**d)


@dataclass
class Generation:
    """A backend's answer to one conversation. ``error`` set means there is no answer (never judged)."""

    text: str = ""
    error: str | None = None
    n_tokens: int = 0
    latency_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Backend(Protocol):
    """Generates chat completions for a batch of conversations.

    Implementations must return one Generation per conversation, in order, and must turn per-request
    failures into ``Generation(error=...)`` rather than raising, so that one bad request never aborts
    or poisons a run.
    """

    name: str

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]: ...

    def provenance(self) -> dict[str, Any]: ...


CONTEXT_EXCEEDED = "context_length_exceeded"  # Generation.meta["error_kind"] of a prompt that cannot fit


@dataclass(frozen=True)
class PromptFit:
    """How one rendered prompt sits in a backend's context window (see ``backends.context_window.fit_prompts``)."""

    tokens: int  # prompt tokens; only a lower bound when ``exact`` is False
    exact: bool = True
    error: str | None = None  # why the prompt cannot be generated; None when it fits
    error_kind: str | None = None  # CONTEXT_EXCEEDED, or "invalid_prompt" (the chat template refused it)

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class ContextAware(Protocol):
    """Optional Backend capability: the context window and whether prompts fit in it.

    A backend that knows its window (``context_length`` not None) answers a prompt that cannot fit
    with ``Generation(error="prompt of N tokens does not fit the context of M tokens")`` for that
    sample alone, so one over-long prompt never fails or slows its batch-mates; ``serve`` uses ``fit``
    to refuse such a request with 400 before it reaches the model. ``reserve`` is the number of new
    tokens that must still fit after the prompt (1 in eval, ``max_tokens`` in serve).
    """

    @property
    def context_length(self) -> int | None: ...

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]: ...


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights (or endpoint) are, after a source or a transform chain resolved it.

    kind: "hf" (a local transformers checkpoint directory), "gguf" (a GGUF file for llama.cpp),
    "openai" (an OpenAI-compatible endpoint).
    ``wrappers`` are serving-time layers (guardrails) applied around the backend, outermost last: each the
    JSON dict of a ``safetydrift.guards.spec.GuardConfig`` (JSON, because run keys hash it).
    """

    spec: str
    kind: Literal["hf", "gguf", "openai"]
    path: Path | None = None
    url: str | None = None
    model_name: str | None = None
    weights_sha256: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[dict[str, Any], ...] = ()


@dataclass
class Verdict:
    label: Label
    score: float | None = None  # a judge's numeric score (e.g. 1-10 or 1-5) where it has one
    reason: str = ""
    raw: str | None = None  # a judge model's raw output, for audit


@dataclass
class JudgeInput:
    item: Item
    prompt: str  # what the target actually saw (after the attack transformed it)
    response: str
    extra: dict[str, Any] = field(default_factory=dict)  # the attack's Outcome.extra (e.g. TAP's best_score)


@runtime_checkable
class Judge(Protocol):
    name: str

    def judge(self, inputs: list[JudgeInput]) -> list[Verdict]: ...


@dataclass(frozen=True)
class Unit:
    """One attack attempt on one item, with a key that stays stable across runs (for resume).

    Simple attacks produce a unit per (item, variant of the prompt); TAP produces one unit per
    (item, run).
    """

    item: Item
    key: str  # e.g. "direct", "trigger", "template=aim", "run=0"
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) pairs, for prompt-only attacks
    meta: tuple[tuple[str, Any], ...] = ()

    def conversation(self) -> Conversation:
        return [{"role": r, "content": c} for r, c in self.messages]

    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)


@dataclass
class Outcome:
    """What an attack produced for one unit: the final prompt the target saw and its answer."""

    unit: Unit
    prompt: str
    generation: Generation
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. TAP's tree, query counts
