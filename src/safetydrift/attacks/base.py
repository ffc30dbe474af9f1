"""Attack base classes.

An attack is constructed from its spec and the run context, lists its *units* (stable keys, so a
resumed run skips finished ones) and executes them against a target backend, yielding one Outcome per
unit as soon as it is done (so the store can append it durably).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from safetydrift.context import Context
from safetydrift.params import NoParams, Params, from_spec, p
from safetydrift.spec import ComponentSpec
from safetydrift.types import Backend, GenerationConfig, Item, Outcome, Unit

Progress = Callable[[int], None]  # advance a progress bar by n units


class Attack(ABC):
    """``Params`` (a ``params.Params`` subclass) declares a subclass's settings; the constructor parses them
    into ``self.params``."""

    name: str = "attack"
    Params: ClassVar[type[Params]] = NoParams
    params: Any

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.params = from_spec(self.Params, spec)

    @abstractmethod
    def units(self, items: Sequence[Item]) -> list[Unit]: ...

    @abstractmethod
    def execute(
        self, units: Sequence[Unit], target: Backend, gen: GenerationConfig, progress: Progress | None = None
    ) -> Iterator[Outcome]: ...


@dataclass(frozen=True, kw_only=True)
class PromptAttackParams(Params):
    batch: int | None = field(
        default=None, metadata=p("conversations per generate() call (default: the target's batch size)", ge=1)
    )


class PromptAttack(Attack):
    """An attack that only rewrites the conversation: generation is batched through the target."""

    Params: ClassVar[type[PromptAttackParams]] = PromptAttackParams
    params: PromptAttackParams

    @property
    def batch_size(self) -> int | None:
        """Conversations per generate() call; None = the target's own batch size."""
        return self.params.batch

    @abstractmethod
    def conversations(self, item: Item) -> list[tuple[str, list[tuple[str, str]]]]:
        """(unit key, [(role, content), ...]) for each attempt on this item."""

    def units(self, items: Sequence[Item]) -> list[Unit]:
        return [
            Unit(item=it, key=key, messages=tuple(msgs))
            for it in items
            for key, msgs in self.conversations(it)
        ]

    def execute(
        self, units: Sequence[Unit], target: Backend, gen: GenerationConfig, progress: Progress | None = None
    ) -> Iterator[Outcome]:
        units = list(units)
        # Sort by length so that left-padded batches waste little compute; yield in that order.
        order = sorted(range(len(units)), key=lambda i: len(units[i].messages[-1][1]))
        # the target's batch size by default: a smaller chunk here would cap a batched backend's batches
        size = self.batch_size or getattr(target, "batch_size", None) or 16
        for start in range(0, len(order), size):
            batch = [units[i] for i in order[start : start + size]]
            gens = target.generate([u.conversation() for u in batch], gen)
            for u, g in zip(batch, gens, strict=True):
                yield Outcome(unit=u, prompt=u.messages[-1][1], generation=g)
            if progress:
                progress(len(batch))
