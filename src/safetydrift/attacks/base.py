"""Attack base classes.

An attack is constructed from its spec and the run context, lists its *units* (stable keys, so a
resumed run skips finished ones) and executes them against a target backend, yielding one Outcome per
unit as soon as it is done (so the store can append it durably).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

from safetydrift.context import Context
from safetydrift.spec import ComponentSpec
from safetydrift.types import Backend, GenerationConfig, Item, Outcome, Unit

Progress = Callable[[int], None]  # advance a progress bar by n units


class Attack(ABC):
    name: str = "attack"

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx

    @abstractmethod
    def units(self, items: Sequence[Item]) -> list[Unit]: ...

    @abstractmethod
    def execute(
        self, units: Sequence[Unit], target: Backend, gen: GenerationConfig, progress: Progress | None = None
    ) -> Iterator[Outcome]: ...


class PromptAttack(Attack):
    """An attack that only rewrites the conversation: generation is batched through the target."""

    batch_size: int | None = None  # conversations per generate() call; None = the target's own batch size

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        self.batch_size = spec.get_int("batch", self.batch_size)

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
