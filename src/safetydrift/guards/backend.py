"""The guarded backend: input filters, the inner backend, output filters — itself a ``Backend``.

Filters are looked up by name in ``registry.guards`` and opened with exactly what each declares it needs,
so adding a filter never touches this module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from safetydrift import registry
from safetydrift.guards.spec import GuardConfig
from safetydrift.types import Generation

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.guards.base import GuardFilter, Side
    from safetydrift.types import Backend, Conversation, GenerationConfig, PromptFit, ResolvedModel


def open_filter(side: Side, name: str, guard: GuardConfig, available: dict[str, Any]) -> GuardFilter:
    """The filter ``name`` on ``side``, given only the things its class ``needs``."""
    cls = registry.guards.get(name)
    return cls(side, guard, **{need: available[need] for need in sorted(cls.needs)})


def unwrap(backend: Any) -> Any:
    """The backend under any guards (e.g. to share a transformers model's loaded weights)."""
    while isinstance(backend, GuardedBackend):
        backend = backend.inner
    return backend


class GuardedBackend:
    """A backend behind input and output filters (see :mod:`safetydrift.guards`)."""

    def __init__(self, inner: Backend, guard: GuardConfig, model: ResolvedModel, ctx: Context) -> None:
        self.inner = inner
        self.guard = guard
        self.name = f"{inner.name}+guard"
        self.refusal = guard.refusal
        available = {"inner": inner, "model": model, "ctx": ctx}
        self.filters: dict[Side, list[GuardFilter]] = {"input": [], "output": []}
        for side, name in guard.filters():
            self.filters[side].append(open_filter(side, name, guard, available))

    @property
    def batch_size(self) -> int | None:
        """The wrapped backend's batch size, so attacks chunk for it (the filters add no batching)."""
        return getattr(self.inner, "batch_size", None)

    @property
    def context_length(self) -> int | None:
        """The wrapped model's window (``types.ContextAware``): the filters add no prompt tokens."""
        return getattr(self.inner, "context_length", None)

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        return self.inner.fit(conversations, config, reserve)  # type: ignore[attr-defined]  # types.ContextAware

    def provenance(self) -> dict[str, Any]:
        inner = dict(self.inner.provenance())
        return {**inner, "guards": [*inner.get("guards", []), self.guard.to_dict()]}

    def _run(self, f: GuardFilter, idx: list[int], convs: list[Conversation], answers: list[str] | None,
             config: GenerationConfig, lat: list[float], flags: dict[int, tuple[str, str]],
             errors: dict[int, str]) -> None:
        where = f"{f.side}:{f.name}"
        t0 = time.perf_counter()
        try:
            res = f.check([convs[i] for i in idx], answers, config)
        except Exception as e:  # a failing filter is an error on its requests, never a crash or a pass
            res = None
            for i in idx:
                errors[i] = f"guard {where} failed: {type(e).__name__}: {e}"
        dt = (time.perf_counter() - t0) / max(len(idx), 1)
        for k, i in enumerate(idx):
            lat[i] += dt
            reason = res[k] if res is not None else None
            if reason is not None:
                flags[i] = (where, reason)

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        n = len(conversations)
        lat = [0.0] * n
        flags: dict[int, tuple[str, str]] = {}
        errors: dict[int, str] = {}
        for f in self.filters["input"]:
            idx = [i for i in range(n) if i not in flags and i not in errors]
            if idx:
                self._run(f, idx, conversations, None, config, lat, flags, errors)
        gens: list[Generation | None] = [None] * n
        passed = [i for i in range(n) if i not in flags and i not in errors]
        if passed:
            for i, g in zip(passed, self.inner.generate([conversations[i] for i in passed], config), strict=True):
                gens[i] = g
        for f in self.filters["output"]:
            answered = {i: a for i in passed if (a := gens[i]) is not None and a.ok}
            idx = [i for i in answered if i not in flags and i not in errors]
            if idx:
                answers = [answered[i].text for i in idx]
                self._run(f, idx, conversations, answers, config, lat, flags, errors)
        return [self._finish(gens[i], lat[i], flags.get(i), errors.get(i)) for i in range(n)]

    def _finish(self, g: Generation | None, lat: float, flag: tuple[str, str] | None, error: str | None) -> Generation:
        """The generation as the caller sees it: an error, the refusal (with who blocked and why), or the
        model's answer; each with the guard's time added."""
        if error is not None:
            g = Generation(error=error, latency_s=(g.latency_s if g else 0.0) + lat, meta=dict(g.meta) if g else {})
        elif flag is not None:
            meta = dict(g.meta) if g else {}
            meta.update(blocked_by=flag[0], guard_reason=flag[1])
            g = Generation(text=self.refusal, n_tokens=g.n_tokens if g else 0,
                           latency_s=(g.latency_s if g else 0.0) + lat, meta=meta)
        else:
            assert g is not None
            g = Generation(text=g.text, error=g.error, n_tokens=g.n_tokens, latency_s=g.latency_s + lat,
                           meta=dict(g.meta))
        g.meta["guard_latency_s"] = round(g.meta.get("guard_latency_s", 0.0) + lat, 6)
        return g


def wrap_backend(backend: Backend, model: ResolvedModel, ctx: Context) -> Backend:
    """Wrap ``backend`` in each of the model's serving wrappers (guard configurations), innermost first."""
    for cfg in model.wrappers:
        backend = GuardedBackend(backend, GuardConfig.from_dict(cfg), model, ctx)
    return backend
