"""The transform interface.

A transform writes a new checkpoint (HF directory or GGUF file) into ``out_dir``; the builder names that
directory by a hash of the recipe, so the same recipe is built once. Guardrails are not transforms: a
``guard:`` step wraps serving (``safetydrift.guards``) and builds nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from safetydrift.params import NoParams, Params, from_spec
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel

if TYPE_CHECKING:
    from safetydrift.context import Context


@dataclass
class BuildResult:
    kind: Literal["hf", "gguf"]
    path: Path  # the checkpoint directory, or the GGUF file, inside out_dir
    provenance: dict[str, Any] = field(default_factory=dict)  # settings actually used, data hashes
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    extra_files: dict[str, int] = field(default_factory=dict)  # name -> bytes, e.g. packed delta


class Transform(ABC):
    """A subclass declares its settings as ``Params`` (a ``params.Params`` subclass); the constructor parses
    the spec into ``self.params``, and the artifact cache key hashes ``to_key(self.params)``."""

    name: ClassVar[str] = "transform"
    needs_kind: ClassVar[tuple[str, ...]] = ("hf",)  # parent kinds this transform can start from
    Params: ClassVar[type[Params]] = NoParams
    params: Any

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        self.params = from_spec(self.Params, spec)
        self.spec = spec
        self.ctx = ctx

    @classmethod
    def control(cls, params: Any) -> str | None:
        """The kind of mechanism control these settings build (e.g. a pure shrink of a delta), or None for a
        real variant. Why: a sweep reads a control beside the compressions but never grades it as one."""
        return None

    def key_material(self, lineage: list[ResolvedModel]) -> dict[str, Any]:
        """Anything beyond the settings that decides the output (data hashes, reference weights, a format)."""
        return {}

    @abstractmethod
    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        """Write the variant into ``out_dir``. ``lineage`` is every model of the chain, base first."""
