"""Running an experiment: build every variant, evaluate (safety, then utility), compare each variant with
its reference, check the expectations, write ``experiment.json``/``summary.json`` and the report.

``safetydrift run EXPERIMENT.yaml --out DIR`` builds what is missing (artifact cache), evaluates what is
missing (result store: resume after a crash) and analyses only the records this run's requests returned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from safetydrift.context import Context
from safetydrift.errors import SafetyDriftError
from safetydrift.expectations import check_expectations, runner_up_pairs
from safetydrift.experiments.executors import EXECUTORS
from safetydrift.experiments.schema import Experiment
from safetydrift.experiments.utility import utility_requests, utility_rows
from safetydrift.provenance import code_version, library_versions
from safetydrift.records import (
    AsrRow,
    Comparison,
    ExperimentResult,
    GuardRow,
    LensSummary,
    Record,
    RunProvenance,
    TapTree,
    UtilityRow,
    VariantSummary,
)
from safetydrift.runner import EvalRequest, summarize
from safetydrift.spec import parse_component, parse_recipe
from safetydrift.stats import Pairing, judge_agreement, judge_disagreements, paired_comparisons
from safetydrift.stats import asr_rows as _asr_rows
from safetydrift.store import OutputLock, ResultStore, atomic_write_text

Cell = tuple[str, str, str]  # (dataset, attack, judge) as the records name them


def asr_rows(exp: Experiment, records: Sequence[Record]) -> list[AsrRow]:
    """ASR of every declared variant per (dataset, attack, judge), named as the experiment names them."""
    return _asr_rows(records, {v.recipe: v.name for v in exp.variants})


def comparisons(exp: Experiment, records: Sequence[Record],
                extra: Sequence[tuple[str, str, Cell]] | None = None) -> list[Comparison]:
    """Paired tests of every variant against its declared reference (``kind`` "reference"), plus the
    ``extra`` (variant, other, cell) tests that expectations need (``kind`` "expectation", e.g. the worst
    level against the runner-up), all Holm-corrected together as one family of the run.

    The unit of evidence is the item: where an item has several units (TAP runs, templates) the test is
    clustered by item (stats.compare_paired).
    """
    pairs = [Pairing(v.name, v.recipe, v.reference, exp.variant(v.reference).recipe)
             for v in exp.variants if v.reference is not None]
    pairs += [Pairing(name, exp.variant(name).recipe, other, exp.variant(other).recipe, "expectation", cell)
              for name, other, cell in extra or []]
    return paired_comparisons(records, pairs)


def run_experiment(exp: Experiment, out: Path, ctx: Context) -> ExperimentResult:
    """Build, evaluate, compare and report; the output directory is locked for the whole run."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SafetyDriftError(f"--out {out} exists and is not a directory")
    with OutputLock(out):
        return _run_experiment(exp, out, ctx)


def _run_experiment(exp: Experiment, out: Path, ctx: Context) -> ExperimentResult:
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    code = code_version()  # now, not at the end: a commit made during the run is not the code that ran
    timings: dict[str, float] = {}
    build_times: dict[str, float] = {}
    store = ResultStore(out / "results.jsonl")

    ctx.log(f"[bold]experiment {escape(exp.name)}[/]: {len(exp.variants)} variants")
    for w in exp.warnings:
        ctx.console.print(f"safetydrift: warning: {escape(w)}")
    for v in exp.variants:  # 1. build (cached by recipe hash)
        t0 = time.time()
        ctx.resolve(v.recipe)
        build_times[v.name] = round(time.time() - t0, 1)
        timings[f"build:{v.name}"] = build_times[v.name]

    models = [v.recipe for v in exp.variants]
    reqs = [EvalRequest(models=models, dataset=ds, attack=atk, judges=exp.judges, gen=exp.gen, backend=exp.backend)
            for ds in exp.datasets for atk in exp.attacks]
    execute = EXECUTORS[exp.executor]
    t0 = time.time()
    per_req = execute(reqs, ctx, store)  # 2. safety evals
    timings["eval:safety"] = round(time.time() - t0, 1)
    t0 = time.time()
    util_records = [r for recs in execute(utility_requests(exp), ctx, store) for r in recs]
    timings["eval:utility"] = round(time.time() - t0, 1)

    # Only this run's records: a store reused with other generation settings keeps its old run keys, which
    # must never be counted or paired with this run's answers.
    safety = [r for recs in per_req for r in recs]
    records = safety + util_records
    names = _eval_names(exp, reqs, per_req)
    util = utility_rows(exp, util_records, ctx, timings)
    asr = asr_rows(exp, safety)
    default = (names[exp.datasets[0]], names[exp.attacks[0]], names[exp.judges[0]])
    extra = runner_up_pairs(exp.expect, exp.variants, asr, default, names)
    all_comps = comparisons(exp, safety, extra)
    comps = [c for c in all_comps if c.kind == "reference"]
    semantics = judge_semantics(exp, names)
    lens = None
    if exp.logitlens and exp.logitlens.variants:  # 4. LogitLens
        t0 = time.time()
        lens = _logitlens(exp, out, ctx)
        timings["logitlens"] = round(time.time() - t0, 1)
    result = ExperimentResult(
        name=exp.name,
        config=exp.raw,
        variants=tuple(_variant_rows(exp, ctx, build_times)),
        asr=tuple(asr),
        comparisons=tuple(comps),
        expectation_tests=tuple(c for c in all_comps if c.kind == "expectation"),
        utility=tuple(util),
        judge_agreement=tuple(judge_agreement(safety, exp.judges) if len(exp.judges) > 1 else []),
        judge_disagreements=tuple(judge_disagreements(comps, semantics)),
        judge_semantics=semantics,
        headline_judge=default[2],
        guards=tuple(_guard_rows(exp, asr, util, records)),
        tap_trees=tuple(_tap_trees(safety, exp, exp.judges[0])),
        logitlens=lens,
        expectations=tuple(check_expectations(exp.expect, exp.variants, asr, all_comps, util, default, names)),
        provenance=RunProvenance(
            libraries=library_versions(), started=started, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            cache_dir=str(ctx.cache_dir), generation=exp.gen, timings_s=timings,
            datasets=tuple(sorted({(r.dataset, r.dataset_sha256) for r in records})), code=code),
    )
    atomic_write_text(out / "experiment.json", json.dumps(result.to_json(), indent=2, default=str))
    if safety:  # the same summary.json contract as `safetydrift eval`
        atomic_write_text(out / "summary.json", json.dumps(summarize(safety).to_json(), indent=2))
    t0 = time.time()
    _render(result, records, out)
    timings["report"] = round(time.time() - t0, 1)
    return result


def _eval_names(exp: Experiment, reqs: list[EvalRequest], per_req: list[list[Record]]) -> dict[str, str]:
    """Each dataset, attack and judge spec as written in the YAML → the name its records carry.

    Records name a dataset by what loaded (a CSV file by its stem, ``advbench50:n=100`` by the subset it
    gave), so expectations are matched through what was measured, not by re-parsing the YAML strings.
    """
    names: dict[str, str] = {}
    for req, recs in zip(reqs, per_req, strict=True):
        if recs:
            names.setdefault(req.dataset, recs[0].dataset)
            names.setdefault(req.attack, recs[0].attack)
    for spec in [*exp.datasets, *exp.attacks, *exp.judges]:
        names.setdefault(spec, spec)
    for j in exp.judges:  # judges name themselves str(spec), as runner.make_judges builds them
        names[j] = str(parse_component(j))
    return names


def judge_semantics(exp: Experiment, names: dict[str, str]) -> dict[str, str]:
    """Each judge (as its records name it, in YAML order) → the semantic it declares, read from the registry
    without building it; a judge that declares none is left out (it is then never paired with another)."""
    from safetydrift import registry
    from safetydrift.judges.base import semantic_of

    out: dict[str, str] = {}
    for j in exp.judges:
        if (s := semantic_of(registry.judges.get(parse_component(j).name))) is not None:
            out.setdefault(names[j], s)
    return out


def _variant_rows(exp: Experiment, ctx: Context, build_times: dict[str, float]) -> list[VariantSummary]:
    from safetydrift.variants.builder import load_manifest
    from safetydrift.variants.inspect import disk_bytes

    rows = []
    for v in exp.variants:
        m = ctx.resolve(v.recipe)
        manifest = load_manifest(m)
        size = disk_bytes(m.path) if m.path is not None else None
        bpw = None
        if manifest:
            bpw = (manifest.get("provenance") or {}).get("bits_per_weight")
            extra = manifest.get("extra_files") or {}
            if "delta.safetensors" in extra:  # what is stored for a delta variant: the packed delta plus
                # the uncompressed tensors it takes from the fine-tune (rest=ft), without which it cannot
                # be rebuilt from the reference
                size = int(extra["delta.safetensors"]) + int(extra.get("rest.safetensors", 0))
        # A serving wrapper (guard) has no artifact: the manifest found is its parent's, whose build time
        # is not this variant's. Otherwise the manifest's time is the build's cost even when cached now.
        own = manifest is not None and manifest.get("recipe") == v.recipe
        build_seconds = manifest.get("build_seconds") if manifest is not None and own else build_times.get(v.name)
        rows.append(VariantSummary(name=v.name, recipe=v.recipe, reference=v.reference, kind=m.kind,
                                   weights_sha256=m.weights_sha256, size_bytes=size, bits_per_weight=bpw,
                                   build_seconds=build_seconds, manifest=manifest, family=v.family,
                                   wrappers=tuple(m.wrappers)))
    return rows


def _guard_rows(exp: Experiment, asr: list[AsrRow], util: list[UtilityRow], records: list[Record]) -> list[GuardRow]:
    rows = []
    util_by = {u.variant: u for u in util}
    head_cell = (exp.datasets[0], exp.attacks[0], exp.judges[0])
    for v in exp.variants:
        transforms = parse_recipe(v.recipe).transforms
        if not transforms or transforms[-1].name != "guard":
            continue
        head = next((a for a in asr if a.variant == v.name and a.cell == head_cell), None)
        lat = [r.gen_meta["guard_latency_s"] for r in records if r.model == v.recipe and "guard_latency_s" in r.gen_meta]
        lat = [x for x in lat if isinstance(x, (int, float))]
        u = util_by.get(v.name)
        rows.append(GuardRow(variant=v.name, asr=head.asr if head else None,
                             false_refusal=u.over_refusal if u else None,
                             latency_added_s=(sum(lat) / len(lat)) if lat else None))
    return rows


def _tap_trees(records: list[Record], exp: Experiment, judge: str) -> list[TapTree]:
    by_recipe = {v.recipe: v.name for v in exp.variants}
    # ``extra`` is the attack's own open payload (TAP: its search tree and query count), not a record field
    return [TapTree(variant=by_recipe[r.model], item_id=r.item_id, run=r.unit, behavior=r.behavior,
                    tree=r.extra["tree"], target_queries=r.extra.get("target_queries"))
            for r in records if r.extra.get("tree") and r.judge == judge and r.model in by_recipe]


def _logitlens(exp: Experiment, out: Path, ctx: Context) -> LensSummary:
    from safetydrift.analysis.logitlens import plot_panels, plot_topk_heatmap, run_logitlens
    from safetydrift.datasets import load_dataset

    lens = exp.logitlens
    assert lens is not None
    ds = load_dataset(lens.prompts, ctx)
    prompts = [it.prompt for it in ds.items[: lens.limit]]
    recipes = {exp.variant(n).recipe: n for n in lens.variants}
    hf = [r for r in recipes if ctx.resolve(r).kind == "hf"]
    results = run_logitlens(hf, prompts, ctx, top_k=lens.top_k, leading_space=lens.leading_space)
    named = {recipes[r]: res for r, res in results.items()}
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    plot_panels(named, figs / "logitlens_mass.png")
    plot_topk_heatmap(named, figs / "logitlens_topk.png")
    data = {name: res.to_dict() for name, res in named.items()}
    atomic_write_text(out / "logitlens.json", json.dumps(data, indent=2))
    return LensSummary(png={"mass": "figures/logitlens_mass.png", "topk": "figures/logitlens_topk.png"},
                       variants=tuple(named), prompts=lens.prompts, limit=lens.limit)


def _render(result: ExperimentResult, records: list[Record], out: Path) -> None:
    """The HTML report, from the typed result and records."""
    try:
        from safetydrift.report.experiment_report import render_experiment_report
    except ImportError:  # the rich report is optional for a library user; the simple one always works
        from safetydrift.report.html import render_eval_report

        render_eval_report(records, summarize(records), out / "report.html", title=result.name)
        return
    render_experiment_report(result, records, out)


def ensure_not_running_inside(out: Path) -> None:
    if (out / "experiment.json").exists() and not (out / "results.jsonl").exists():
        raise SafetyDriftError(f"{out} has an experiment.json but no results.jsonl: refusing to mix runs")
