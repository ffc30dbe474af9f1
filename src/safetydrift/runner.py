"""Evaluation: (model recipe × dataset × attack × judges) → durable judged samples → summary.

The unit of resume is (run key, item, attack unit, judge). The run key hashes everything that decides
a response — model weights, full spec strings, dataset content, generation settings, backend — so a
changed input never reuses a stale answer, and the same command run again only fills in what is missing.
Each judged sample is a typed :class:`~safetydrift.records.Record`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from safetydrift import registry
from safetydrift.context import Context
from safetydrift.datasets import load_dataset
from safetydrift.errors import SafetyDriftError
from safetydrift.hashing import sha256_json
from safetydrift.judges.base import DEFAULT_JUDGES
from safetydrift.provenance import library_versions
from safetydrift.records import AsrRow, EvalSummary, Record
from safetydrift.spec import parse_component, parse_recipe
from safetydrift.store import ResultStore
from safetydrift.types import (
    FAIL,
    UNSCORABLE,
    Dataset,
    Generation,
    GenerationConfig,
    Judge,
    JudgeInput,
    Outcome,
    Unit,
    Verdict,
)


@dataclass
class EvalRequest:
    models: list[str]
    dataset: str
    attack: str = "direct"
    judges: list[str] = field(default_factory=lambda: list(DEFAULT_JUDGES))
    limit: int | None = None
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    backend: str | None = None
    prompt_column: str | None = None
    category_column: str | None = None
    retry_errors: bool = True  # a failed generation (endpoint error, OOM) is asked again on the next run


def make_judges(specs: Sequence[str], ctx: Context) -> list[Judge]:
    out = []
    for s in specs:
        comp = parse_component(s)
        out.append(registry.judges.get(comp.name)(comp, ctx))
    return out


def make_attack(spec: str, ctx: Context) -> Any:
    comp = parse_component(spec)
    return registry.attacks.get(comp.name)(comp, ctx)


def progress_bar(ctx: Context) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=ctx.console,
        disable=ctx.quiet,
        transient=False,
    )


def _limit(ds: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(ds):
        return ds
    from safetydrift.datasets.files import items_hash

    items = ds.items[:limit]
    return Dataset(ds.name, items, ds.source, items_hash(items), ds.license)


def judge_outcomes(outcomes: list[Outcome], judge: Judge) -> list[Verdict]:
    """Judge only the outcomes that have an answer: an errored generation is unscorable, never judged."""
    verdicts: list[Verdict | None] = [None] * len(outcomes)
    for i, o in enumerate(outcomes):
        if not o.generation.ok:
            verdicts[i] = Verdict(UNSCORABLE, reason=f"generation error: {o.generation.error}")
        elif o.generation.meta.get("blocked_by"):  # a guard answered instead of the model: a failed attack
            verdicts[i] = Verdict(FAIL, reason=f"blocked by guard ({o.generation.meta['blocked_by']})")
    idx = [i for i, v in enumerate(verdicts) if v is None]
    if idx:
        got = judge.judge([JudgeInput(outcomes[i].unit.item, outcomes[i].prompt, outcomes[i].generation.text,
                                      dict(outcomes[i].extra)) for i in idx])
        if len(got) != len(idx):
            raise RuntimeError(f"judge {judge.name} returned {len(got)} verdicts for {len(idx)} inputs")
        for i, v in zip(idx, got, strict=True):
            verdicts[i] = v
    return [v for v in verdicts if v is not None]


def run_eval(req: EvalRequest, ctx: Context, store: ResultStore, *, attack: Any = None,
             judges: list[Judge] | None = None) -> list[Record]:
    """Evaluate every model of the request; returns this request's records (old and new).

    ``attack``/``judges`` may be passed in already built (the CLI builds them before it creates any
    output, so a bad setting never leaves a half-made output directory).
    """
    ds = _limit(load_dataset(req.dataset, ctx, req.prompt_column, req.category_column), req.limit)
    attack = attack or make_attack(req.attack, ctx)
    judges = judges or make_judges(req.judges, ctx)
    units = attack.units(ds.items)
    libs = library_versions()
    mine: list[Record] = []
    for model_spec in req.models:
        recipe = parse_recipe(model_spec)
        resolved = ctx.resolve(recipe)
        run_key = sha256_json(
            {
                "model": str(recipe),
                "weights": resolved.weights_sha256 or resolved.url,
                "wrappers": resolved.wrappers,
                "dataset": ds.sha256,
                "attack": str(attack.spec),
                "gen": req.gen.to_dict(),
                "backend": req.backend,
            }
        )[:24]
        run = _Run(run_key=run_key, model=str(recipe), model_sha256=resolved.weights_sha256, dataset=ds.name,
                   dataset_sha256=ds.sha256, attack=str(attack.spec), gen=req.gen, backend=req.backend,
                   libraries=libs)
        judge_names = [j.name for j in judges]
        _check_judge_versions(store, run_key, judges, str(recipe))
        todo_gen = []
        rejudge: list[tuple[Unit, Record]] = []
        for u in units:
            missing = [j for j in judge_names
                       if not store.has(run_key, u.item.id, u.key, j, retry_errors=req.retry_errors)]
            if not missing:
                continue
            prev = store.find_response(run_key, u.item.id, u.key)
            if prev is not None and not (req.retry_errors and prev.error is not None):
                rejudge.append((u, prev))
            else:
                todo_gen.append(u)
        done = len(units) - len(todo_gen) - len(rejudge)
        ctx.log(f"[bold]{escape(str(recipe))}[/] on {escape(ds.name)} ({escape(str(attack.spec))}): "
                f"{len(units)} units, {done} already done")

        if rejudge:
            outs = [Outcome(u, p.prompt, _gen_from_record(p), extra=dict(p.extra)) for u, p in rejudge]
            _judge_and_store(outs, judges, run, store)
        if todo_gen:
            backend = ctx.backend(recipe, req.backend)
            run = replace(run, backend_info=backend.provenance())
            with progress_bar(ctx) as prog:
                task = prog.add_task(f"generating {escape(str(recipe)[:48])}", total=len(todo_gen))
                buf: list[Outcome] = []
                try:
                    for outcome in attack.execute(todo_gen, backend, req.gen, lambda n, t=task: prog.advance(t, n)):
                        buf.append(outcome)
                        if len(buf) >= 16:
                            _judge_and_store(buf, judges, run, store)
                            buf = []
                finally:  # Ctrl-C or SIGTERM mid-run: every answer already generated is judged and kept
                    if buf:
                        _judge_and_store(buf, judges, run, store)
        unit_keys = {(u.item.id, u.key) for u in units}
        mine.extend(r for r in store if r.run_key == run_key and (r.item_id, r.unit) in unit_keys and r.judge in judge_names)
    return mine


@dataclass(frozen=True)
class _Run:
    """What every record of one (model, dataset, attack, settings) run shares."""

    run_key: str
    model: str
    model_sha256: str | None
    dataset: str
    dataset_sha256: str
    attack: str
    gen: GenerationConfig
    backend: str | None
    libraries: Mapping[str, str | None]
    backend_info: Mapping[str, Any] | None = None

    def record(self, o: Outcome, judge: str, v: Verdict, ts: str, judge_version: str | None = None) -> Record:
        g = o.generation
        return Record(
            run_key=self.run_key, model=self.model, model_sha256=self.model_sha256, dataset=self.dataset,
            dataset_sha256=self.dataset_sha256, attack=self.attack, gen=self.gen, seed=self.gen.seed,
            backend=self.backend, libraries=self.libraries, backend_info=self.backend_info,
            item_id=o.unit.item.id, unit=o.unit.key, category=o.unit.item.category, behavior=o.unit.item.prompt,
            target=o.unit.item.target, prompt=o.prompt, response=g.text if g.ok else None, error=g.error,
            n_tokens=g.n_tokens, latency_s=round(g.latency_s, 4), gen_meta=g.meta, judge=judge, judge_version=judge_version, verdict=v.label,
            score=v.score, reason=v.reason, judge_raw=v.raw, unit_meta=o.unit.meta_dict(), extra=o.extra, ts=ts,
        )


def _check_judge_versions(store: ResultStore, run_key: str, judges: Sequence[Judge], model: str) -> None:
    """A store's verdicts of a trained judge must come from the card it has now: a retrained card under the
    same name would otherwise mix two judges in one ASR (the store never replaces a finished sample)."""
    want = {j.name: v for j in judges if (v := getattr(j, "version", None))}
    if not want:
        return
    for r in store:
        if r.run_key == run_key and r.judge in want and r.judge_version != want[r.judge]:
            raise SafetyDriftError(f"judge {r.judge!r}: this output's verdicts for {model} come from "
                                   f"{r.judge_version or 'an unversioned card'}, the installed card is {want[r.judge]}; "
                                   "write to a new --out")


def _gen_from_record(rec: Record) -> Generation:
    """A stored answer as a generation, to judge it anew without asking the model again."""
    return Generation(text=rec.response or "", error=rec.error, n_tokens=rec.n_tokens, latency_s=rec.latency_s,
                      meta=dict(rec.gen_meta))


def _judge_and_store(outcomes: list[Outcome], judges: list[Judge], run: _Run, store: ResultStore) -> None:
    per_judge = {j.name: judge_outcomes(outcomes, j) for j in judges}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i, o in enumerate(outcomes):
        # one write + fsync per unit: all its judges land together
        store.append([run.record(o, j.name, per_judge[j.name][i], now, getattr(j, "version", None)) for j in judges])


def summarize(records: Iterable[Record]) -> EvalSummary:
    """summary.json: per model spec, ASR with Wilson CI overall and per category, per dataset, attack and
    judge (the first row of a model is its headline)."""
    from safetydrift.stats import asr_rows

    models: dict[str, list[AsrRow]] = {}
    for row in asr_rows(records):
        models.setdefault(row.recipe, []).append(row)
    return EvalSummary(models={m: tuple(rows) for m, rows in models.items()}, libraries=library_versions())
