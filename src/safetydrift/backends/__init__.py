"""Backends: how a variant generates. ``open_backend`` picks one by the model's kind and wraps guards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetydrift import registry
from safetydrift.spec import parse_component

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.types import Backend, ResolvedModel

DEFAULT_BACKEND = {"hf": "transformers", "gguf": "llamacpp", "openai": "openai"}


def open_backend(model: ResolvedModel, backend_spec: str | None, ctx: Context) -> Backend:
    """The backend for ``model``; the unwrapped model's backend is shared per weights through the context
    (``Context.model_backend``), so a guarded variant reuses the loaded model it guards."""
    from dataclasses import replace

    spec = parse_component(backend_spec or DEFAULT_BACKEND[model.kind])
    factory = registry.backends.get(spec.name)
    bare = replace(model, wrappers=())
    backend = ctx.model_backend(bare, backend_spec, lambda: factory(bare, spec, ctx))
    if model.wrappers:
        from safetydrift.guards.backend import wrap_backend

        backend = wrap_backend(backend, model, ctx)
    return backend
