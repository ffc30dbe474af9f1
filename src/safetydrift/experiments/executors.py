"""Executors: how an experiment's eval requests run. Each returns, per request, exactly that request's
records (old and new), so a store reused with other settings never leaks answers into the analysis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetydrift.context import Context
from safetydrift.errors import UnsupportedError
from safetydrift.records import Record
from safetydrift.runner import EvalRequest, run_eval
from safetydrift.store import ResultStore

Executor = Callable[[list[EvalRequest], Context, ResultStore], list[list[Record]]]


def eval_local(reqs: list[EvalRequest], ctx: Context, store: ResultStore) -> list[list[Record]]:
    """Run each request in turn; per request, exactly the records it asked for (old and new)."""
    return [run_eval(req, ctx, store) for req in reqs]


def _cell(req_dict: dict[str, Any], cache_dir: str, part: str) -> list[Record]:
    """One Ray task: one model of one request, into its own part file."""
    from safetydrift.types import GenerationConfig

    d = dict(req_dict)
    d["gen"] = GenerationConfig(**d["gen"])
    return run_eval(EvalRequest(**d), Context(cache_dir=Path(cache_dir), quiet=True), ResultStore(Path(part)))


def eval_ray(reqs: list[EvalRequest], ctx: Context, store: ResultStore) -> list[list[Record]]:
    """One Ray task per (model, dataset, attack) cell, each with its own store file, merged afterwards.

    Variants are built first by the driver (they share the artifact cache), so tasks only generate. A
    task returns its own request's records, so a part file left by an earlier configuration never leaks in.
    """
    try:
        import ray
    except ImportError:
        raise UnsupportedError("executor 'ray' needs Ray: pip install 'safetydrift[ray]'") from None

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    cell = ray.remote(_cell)
    parts_dir = store.path.parent / "parts"
    parts_dir.mkdir(exist_ok=True)
    futures, owner = [], []
    for i, req in enumerate(reqs):
        for j, m in enumerate(req.models):
            d = dataclasses.asdict(dataclasses.replace(req, models=[m]))
            futures.append(cell.remote(d, str(ctx.cache_dir), str(parts_dir / f"cell-{i}-{j}.jsonl")))
            owner.append(i)
    per_req: list[list[Record]] = [[] for _ in reqs]
    for i, recs in zip(owner, ray.get(futures), strict=True):
        store.append(recs)
        per_req[i].extend(recs)
    return per_req


EXECUTORS: dict[str, Executor] = {"local": eval_local, "ray": eval_ray}
