"""The free-lunch map's cell runner: an experiment with a ``sweep:`` block (``experiments/sweep.py``) run one cell
(variant) at a time, resumable, then analysed and read against the decision rules (``analysis/freelunch.py``).

A cell is built, then evaluated on every dataset, attack and utility set, with a progress bar (and ETA) over
cells. A finished cell is written to ``DIR/sweep/cells.jsonl``; the next invocation skips it, and an interrupted
cell resumes from the result store. Then the whole experiment is analysed as ``safetydrift run`` would (every
record is in the store, so nothing is generated again) and ``DIR/sweep.html`` / ``sweep.json`` are written next
to ``report.html``. Separate from ``experiments/sweep.py`` (imported by the schema) so that the runner may
import ``experiments.run`` without a cycle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.errors import SpecError

if TYPE_CHECKING:
    from safetydrift.analysis.freelunch import SweepRow
    from safetydrift.context import Context
    from safetydrift.experiments.schema import Experiment
    from safetydrift.records import ExperimentResult, Record
    from safetydrift.runner import EvalRequest


# ------------------------------------------------------------------------------------------- cells
def cell_requests(exp: Experiment) -> list[tuple[str, list[EvalRequest]]]:
    """Per variant (a cell of the map), its safety and utility requests, each for that one model."""
    from safetydrift.experiments.utility import utility_requests
    from safetydrift.runner import EvalRequest

    safety = [EvalRequest(models=[], dataset=ds, attack=atk, judges=exp.judges, gen=exp.gen, backend=exp.backend)
              for ds in exp.datasets for atk in exp.attacks]
    reqs = safety + utility_requests(exp)
    return [(v.name, [dataclasses.replace(r, models=[v.recipe]) for r in reqs]) for v in exp.variants]


def _cell_key(reqs: list[EvalRequest]) -> str:
    from safetydrift.hashing import sha256_json

    return sha256_json([dataclasses.asdict(r) for r in reqs])[:24]


def run_cells(exp: Experiment, out: Path, ctx: Context, executor: str = "local") -> tuple[int, int]:
    """Evaluate every cell not yet in ``out/sweep/cells.jsonl``; returns (cells run, cells skipped)."""
    from safetydrift.experiments.executors import eval_groups
    from safetydrift.runner import progress_bar
    from safetydrift.store import OutputLock, ResultStore

    with OutputLock(out):
        ledger = out / "sweep" / "cells.jsonl"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        done = set()
        if ledger.exists():
            for line in ledger.read_text(encoding="utf-8").splitlines():
                try:
                    done.add(json.loads(line)["key"])
                except (ValueError, KeyError, TypeError):  # a torn last line: that cell runs again
                    continue
        cells = [(name, reqs, _cell_key(reqs)) for name, reqs in cell_requests(exp)]
        todo = [c for c in cells if c[2] not in done]
        ctx.log(f"[bold]sweep {exp.name}[/]: {len(cells)} cells, {len(cells) - len(todo)} already done")
        store = ResultStore(out / "results.jsonl")
        with progress_bar(ctx) as prog, ledger.open("a", encoding="utf-8") as f:
            task = prog.add_task("sweep cells", total=len(cells), completed=len(cells) - len(todo))

            last = [time.perf_counter()]

            def finished(k: int) -> None:
                # seconds since the previous cell finished: with the local executor, this cell's build and evals
                # (ray builds every model first and runs cells side by side: no per-cell time to give)
                now = time.perf_counter()
                secs = round(now - last[0], 1) if executor == "local" else None
                f.write(json.dumps({"cell": todo[k][0], "key": todo[k][2], "seconds": secs,
                                    "executor": executor}) + "\n")
                f.flush()
                last[0] = now
                prog.advance(task)

            eval_groups([reqs for _, reqs, _ in todo], ctx, store, executor, on_done=finished)
    return len(todo), len(cells) - len(todo)


# ------------------------------------------------------------------------------------------- analysis
def run_sweep(exp: Experiment, out: Path, ctx: Context, executor: str = "local") -> list[SweepRow]:
    """Cells, then the experiment's own analysis and report, then the map's verdicts and page."""
    from safetydrift.analysis.freelunch import Rules, SweepRow, decide, evidence, parting_dose, scale_tests
    from safetydrift.experiments import ensure_not_running_inside, run_experiment
    from safetydrift.provenance import code_version
    from safetydrift.report.sweep import render_sweep_report
    from safetydrift.store import OutputLock, atomic_write_text

    code_version()  # fixed for this process at its start (cached): the cells take hours, commits may land meanwhile
    spec = exp.sweep
    assert spec is not None
    out.mkdir(parents=True, exist_ok=True)
    ensure_not_running_inside(out)
    started, load, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()[0], time.perf_counter()
    ran, skipped = run_cells(exp, out, ctx, executor)
    t_cells = time.perf_counter()
    # every record is in the store now: the local executor only looks answers up
    result = run_experiment(dataclasses.replace(exp, executor="local"), out, ctx)
    t_analysis = time.perf_counter()
    rules = Rules()
    with OutputLock(out):
        from safetydrift.spec import parse_component

        judge = result.headline_judge or str(parse_component(exp.judges[0]))  # as the records name it
        cell, records = _decision_records(exp, ctx, out, judge)
        controls = control_kinds(spec)
        rows = [SweepRow(e, decide(e, rules)) for e in evidence(
            spec, result, cell, _scale_p(spec, exp, records, cell, scale_tests, controls), rules, controls)]
        parting = parting_dose(rows, rules)
        lens = _lens(exp, ctx, out, parting)
        atomic_write_text(out / "sweep.json", json.dumps({
            "format": 1, "name": exp.name, "decision_cell": list(cell), "rules": dataclasses.asdict(rules),
            "rules_text": [{"rule": r, "text": t} for r, t in rules.text()], "parting_dose": parting,
            "cells": [r.to_json() for r in rows]}, indent=2, default=str))
        render_sweep_report(spec, result, rows, cell, out, rules, parting, lens)
        end = time.perf_counter()
        _log_run(out, {"started": started, "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                       "executor": executor, "cells_run": ran, "cells_skipped": skipped,
                       "seconds": {"cells": round(t_cells - t0, 1), "analysis": round(t_analysis - t_cells, 1),
                                   "verdicts_lens_page": round(end - t_analysis, 1), "wall": round(end - t0, 1)},
                       "analysis_stages": _stages(result), "config_sha256": _config_sha(exp)})
    return rows


def _stages(result: ExperimentResult) -> dict[str, float]:
    """The analysis pass's stage timings (a copy), the per-variant ``build:*`` lookups summed into one."""
    got: dict[str, float] = {}
    for k, v in (result.provenance.timings_s if result.provenance else {}).items():
        key = "builds (cache lookups)" if k.startswith("build:") else k
        got[key] = round(got.get(key, 0.0) + float(v), 1)
    return got


def _config_sha(exp: Experiment) -> str:
    """Which map a log line belongs to: the cells (names and recipes) and what each cell evaluates."""
    from safetydrift.hashing import sha256_json

    return sha256_json([[name, _cell_key(reqs)] for name, reqs in cell_requests(exp)])[:16]


def _log_run(out: Path, entry: dict[str, Any]) -> None:
    """One line per invocation in ``DIR/sweep/runs.jsonl``: what ran, how long each phase took, at what load
    (``benchmarks/sweep.py`` reads the first run and the re-run from it)."""
    with (out / "sweep" / "runs.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def _decision_records(exp: Experiment, ctx: Context, out: Path, judge: str) -> tuple[tuple[str, str, str],
                                                                                list[Record]]:
    """The decision cell (the first dataset and attack, as the records name them, and the headline judge) and
    its records: a store lookup, nothing is generated. The names come from the records of the config's first
    dataset and attack themselves, not from the order of the ASR table."""
    from safetydrift.experiments.executors import eval_groups
    from safetydrift.runner import EvalRequest
    from safetydrift.store import ResultStore

    req = EvalRequest(models=[v.recipe for v in exp.variants], dataset=exp.datasets[0], attack=exp.attacks[0],
                      judges=exp.judges, gen=exp.gen, backend=exp.backend)
    recs = [r for r in eval_groups([[req]], ctx, ResultStore(out / "results.jsonl"))[0] if r.judge == judge]
    if not recs:
        raise SpecError(f"sweep {exp.name}: no records of judge {judge!r} on {exp.datasets[0]} / {exp.attacks[0]}")
    return (recs[0].dataset, recs[0].attack, judge), recs


def control_kinds(spec: Any) -> dict[str, str]:
    """Compression label → control kind, for the labels whose last stage builds a mechanism control (its
    transform's ``control(params)``: e.g. ``bitdelta:scale=0.7`` → ``scale``)."""
    from safetydrift.params import from_spec
    from safetydrift.registry import transforms
    from safetydrift.spec import parse_recipe

    out: dict[str, str] = {}
    for label, stages in spec.compress:
        # the last stage that builds weights: a serving guard after a control leaves it a control
        built = [t for t in parse_recipe(f"x>{stages}").transforms if t.name in transforms]
        if not built:
            continue
        cls = transforms.get(built[-1].name)
        control, params = getattr(cls, "control", None), getattr(cls, "Params", None)
        kind = control(from_spec(params, built[-1])) if control and params else None
        if kind is not None:
            out[label] = kind
    return out


def _scale_p(spec: Any, exp: Experiment, records: list[Record], cell: tuple[str, str, str],
             scale_tests: Any, controls: dict[str, str]) -> dict[str, float]:
    if spec.scale_control is None:
        return {}
    recipe = {v.name: v.recipe for v in exp.variants}
    cells = spec.cells()
    control = {(c.dose, c.seed): c.name for c in cells if c.compress == spec.scale_control}
    pairs = [(c.name, recipe[c.name], control[(c.dose, c.seed)], recipe[control[(c.dose, c.seed)]])
             for c in cells if c.role == "compressed" and c.compress not in controls
             and c.compress != spec.scale_control]
    return scale_tests(records, pairs, cell) if pairs else {}


def _lens(exp: Experiment, ctx: Context, out: Path, parting: str | None) -> Path | None:
    """LogitLens panels of aligned, the fine-tune and every compression at the parting dose (first seed)."""
    spec = exp.sweep
    if spec is None or parting is None or not spec.lens:
        return None
    from safetydrift.analysis.logitlens import plot_panels, run_logitlens
    from safetydrift.datasets import load_dataset

    seed = spec.seeds[0]
    names = [c.name for c in spec.cells() if c.role == "base" or (c.dose == parting and c.seed == seed)]
    recipes = {exp.variant(n).recipe: n for n in names}
    hf = [r for r in recipes if ctx.resolve(r).kind == "hf"]
    if not hf:
        return None
    prompts = [it.prompt for it in load_dataset(exp.datasets[0], ctx).items[: spec.lens]]
    results = run_logitlens(hf, prompts, ctx, system_prompt=exp.gen.system_prompt, show_progress=not ctx.quiet)
    png = out / "figures" / "sweep_lens.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_panels({recipes[r]: res for r, res in results.items()}, png)
    return png


def print_verdicts(rows: list[SweepRow]) -> None:
    from rich.table import Table

    from safetydrift.analysis.freelunch import Rules
    from safetydrift.cli.common import print_table
    from safetydrift.report.format import pct, pval

    t = Table(title="free-lunch map: the rule each cell meets")
    for h in ("cell", "ASR FT", "ASR X", "Holm p", "R", "util. loss", "rule", "why"):
        t.add_column(h, overflow="fold")
    for r in rows:
        e = r.evidence
        t.add_row(e.name, pct(e.asr_ft, 0), pct(e.asr_x, 0), pval(e.p_holm), "–" if e.r is None else f"{e.r:.2f}",
                  pct(e.utility_loss, 0), r.verdict.rule, r.verdict.why)
    print_table(t)
    for name, text in Rules().text():
        print(f"  {name}: {text}")
