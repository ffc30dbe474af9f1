"""Run context: passed explicitly to every component instead of a global config module."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from safetydrift.spec import Recipe
    from safetydrift.types import Backend, ResolvedModel


def default_cache_dir() -> Path:
    env = os.environ.get("SAFETYDRIFT_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("safetydrift"))


def tools_dir() -> Path:
    """Where the install step puts tools that runs use but never build (llama.cpp's converter sdist).

    Kept apart from the artifact cache: an empty cache means "rebuild every variant", not "download the
    toolchain again". ``SAFETYDRIFT_TOOLS`` overrides it.
    """
    env = os.environ.get("SAFETYDRIFT_TOOLS")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("safetydrift"))


@dataclass
class Context:
    """Where artifacts live, where messages go, and how nested specs are turned into objects."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    device: str = "cpu"
    quiet: bool = False
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @property
    def artifacts_dir(self) -> Path:
        d = self.cache_dir / "artifacts"
        d.mkdir(parents=True, exist_ok=True)
        return d

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
