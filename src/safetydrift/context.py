"""Run context: passed explicitly to every component instead of a global config module."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from safetydrift.hashing import VerifyPolicy, sha256_file, sha256_weights
from safetydrift.paths import default_cache_dir, tools_dir  # re-exported: older imports keep working

if TYPE_CHECKING:
    from safetydrift.spec import Recipe
    from safetydrift.types import Backend, ResolvedModel

__all__ = ["Context", "default_cache_dir", "tools_dir"]


@dataclass
class Context:
    """Where artifacts live, where messages go, and how nested specs are turned into objects."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    device: str = "cpu"
    quiet: bool = False
    # how much a cached artifact is checked against its manifest before use: "full" re-hashes every file
    # once per process, "fast" trusts a hash memo whose stat fingerprint (incl. ctime) still matches,
    # "off" checks only that the files exist with their recorded sizes
    verify: VerifyPolicy = "fast"
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @property
    def artifacts_dir(self) -> Path:
        d = self.cache_dir / "artifacts"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def hash_memo_dir(self) -> Path:
        return self.cache_dir / "hashes"

    def hash_file(self, path: Path) -> str:
        """A file's sha256 under this context's verification policy (memo kept in the cache)."""
        return sha256_file(path, memo_dir=self.hash_memo_dir, trust_memo=self.verify != "full")

    def hash_weights(self, path: Path) -> str:
        """The weights hash of a checkpoint directory or GGUF file, under the verification policy."""
        return sha256_weights(path, memo_dir=self.hash_memo_dir, trust_memo=self.verify != "full")

    def log(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg)

    def resolve(self, recipe: str | Recipe) -> ResolvedModel:
        """Resolve a model spec or variant recipe, building missing variants (cached by recipe hash)."""
        from safetydrift.variants.builder import resolve_recipe

        return resolve_recipe(recipe, self)

    def backend(self, recipe: str | Recipe, backend_spec: str | None = None) -> Backend:
        """A generation backend for a recipe; loaded once per context and shared (TAP roles, judges)."""
        from safetydrift.backends import open_backend

        key = f"{recipe}|{backend_spec}"
        if key not in self._backends:
            self._backends[key] = open_backend(self.resolve(recipe), backend_spec, self)
        return self._backends[key]

    def model_backend(self, model: ResolvedModel, backend_spec: str | None, open_new: Any) -> Backend:
        """The backend of a resolved model's weights (not of its recipe): a guarded variant and the variant
        it guards share one loaded model, and with it the backend's generation memo (a guard never changes
        the model's answer to a prompt it lets through, so that answer is generated once)."""
        key = f"weights|{model.kind}|{model.path}|{model.url}|{model.model_name}|{model.weights_sha256}|{backend_spec}"
        if key not in self._backends:
            self._backends[key] = open_new()
        return self._backends[key]
