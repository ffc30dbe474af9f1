"""Executors: how an experiment's eval requests run. Each returns, per request, exactly that request's
records (old and new), so a store reused with other settings never leaks answers into the analysis."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetydrift.context import Context
from safetydrift.errors import UnsupportedError
from safetydrift.hashing import sha256_json
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


def require_ray() -> Any:
    """The ray module, or one line saying how to get it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UnsupportedError("executor 'ray' needs Ray: pip install ray (or pip install 'safetydrift[ray]')") from None
    return ray


def _part_name(req: EvalRequest, model: str) -> str:
    """A part file per (model, dataset, attack, judges, settings): the same task finds its file again on resume,
    whatever else the run asks for."""
    key = {"model": model, "dataset": req.dataset, "attack": req.attack, "judges": list(req.judges),
           "gen": req.gen.to_dict(), "backend": req.backend, "limit": req.limit}
    return f"cell-{sha256_json(key)[:16]}.jsonl"


def eval_ray(reqs: list[EvalRequest], ctx: Context, store: ResultStore,
             on_done: Callable[[int], None] | None = None) -> list[list[Record]]:
    """One Ray task per (model, dataset, attack) cell, each with its own store file, merged as each finishes.

    Variants are built first by the driver (they share the artifact cache), so tasks only generate. A
    task returns its own request's records, so a part file left by an earlier configuration never leaks in.
    ``on_done(i)`` is called when every task of request ``i`` has finished (a progress bar over requests).
    """
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    cell = ray.remote(_cell)
    parts_dir = store.path.parent / "parts"
    parts_dir.mkdir(exist_ok=True)
    futures, owner = [], []
    for i, req in enumerate(reqs):
        for m in req.models:
            d = dataclasses.asdict(dataclasses.replace(req, models=[m]))
            futures.append(cell.remote(d, str(ctx.cache_dir), str(parts_dir / _part_name(req, m))))
            owner.append(i)
    index = {f: k for k, f in enumerate(futures)}
    left = [owner.count(i) for i in range(len(reqs))]
    slots: list[list[Record]] = [[] for _ in futures]
    pending = list(futures)
    while pending:  # merged as they finish, so an interrupted run keeps every finished task's records
        done, pending = ray.wait(pending, num_returns=1)
        for f in done:
            k = index[f]
            slots[k] = ray.get(f)
            store.append(slots[k])
            left[owner[k]] -= 1
            if left[owner[k]] == 0 and on_done is not None:
                on_done(owner[k])
    per_req: list[list[Record]] = [[] for _ in reqs]
    for k, recs in enumerate(slots):  # in request order, whatever order the tasks finished in
        per_req[owner[k]].extend(recs)
    return per_req


def eval_groups(groups: list[list[EvalRequest]], ctx: Context, store: ResultStore, executor: str = "local",
                on_done: Callable[[int], None] | None = None) -> list[list[Record]]:
    """Each group's requests (a sweep cell: one model, every dataset and attack), records per group.

    ``local`` runs group after group, building each model when its group starts (``ctx.resolve``) and building
    each attack and judge once for all groups; ``ray`` builds every model in the driver, then runs one task per
    (request, model). ``on_done(g)`` follows each finished group.
    """
    flat = [(g, req) for g, reqs in enumerate(groups) for req in reqs]
    if executor == "ray":
        require_ray()  # before any build: a missing extra fails in one line, at once
        for _, req in flat:
            for m in req.models:
                ctx.resolve(m)
        left = [len(reqs) for reqs in groups]

        def req_done(i: int) -> None:
            g = flat[i][0]
            left[g] -= 1
            if left[g] == 0 and on_done is not None:
                on_done(g)

        per_req = eval_ray([req for _, req in flat], ctx, store, on_done=req_done)
        out: list[list[Record]] = [[] for _ in groups]
        for (g, _), got in zip(flat, per_req, strict=True):
            out[g].extend(got)
        for g, reqs in enumerate(groups):  # an empty group has no task to report it
            if not reqs and on_done is not None:
                on_done(g)
        return out
    if executor != "local":
        raise UnsupportedError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    from safetydrift.runner import make_attack, make_judges

    attacks: dict[str, Any] = {}
    judges: dict[tuple[str, ...], Any] = {}
    out = []
    for g, reqs in enumerate(groups):
        recs: list[Record] = []
        for req in reqs:
            if req.attack not in attacks:
                attacks[req.attack] = make_attack(req.attack, ctx)
            jkey = tuple(req.judges)
            if jkey not in judges:
                judges[jkey] = make_judges(req.judges, ctx)
            recs.extend(run_eval(req, ctx, store, attack=attacks[req.attack], judges=judges[jkey]))
        out.append(recs)
        if on_done is not None:
            on_done(g)
    return out


EXECUTORS: dict[str, Executor] = {"local": eval_local, "ray": eval_ray}
