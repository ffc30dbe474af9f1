"""``safetydrift eval``: models/variants × one dataset × one attack × judges → results, summary, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.cli.common import (
    add_generation_args,
    check_models,
    generation_config,
    make_context,
    print_table,
    short_names,
)
from safetydrift.errors import SafetyDriftError
from safetydrift.judges.base import DEFAULT_JUDGES

if TYPE_CHECKING:
    from safetydrift.records import EvalSummary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, help="model spec or recipe (repeatable)")
    p.add_argument("--dataset", required=True, help="registered name or CSV/JSONL path")
    p.add_argument("--attack", default="direct")
    p.add_argument("--judge", action="append", default=None, help="judge spec (repeatable; default: refusal and keyword)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--prompt-column", default=None)
    p.add_argument("--category-column", default=None)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-retry-errors", dest="retry_errors", action="store_false",
                   help="keep stored failed generations instead of asking again")
    add_generation_args(p)


def run(args: argparse.Namespace) -> int:
    from safetydrift.runner import EvalRequest, make_attack, make_judges, run_eval
    from safetydrift.store import OutputLock, ResultStore

    ctx = make_context(args)
    if args.limit is not None and args.limit < 1:
        raise SafetyDriftError("--limit must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SafetyDriftError(f"--out {out} exists and is not a directory")
    req = EvalRequest(
        models=_unique(args.model, "--model", ctx),
        dataset=args.dataset,
        attack=args.attack,
        judges=_unique(args.judge or list(DEFAULT_JUDGES), "--judge", ctx),
        limit=args.limit,
        gen=generation_config(args),
        backend=args.backend,
        prompt_column=args.prompt_column,
        category_column=args.category_column,
        retry_errors=args.retry_errors,
    )
    # Validate every spec, and build the attack and judges, before anything is written.
    _validate(req, ctx)
    attack = make_attack(req.attack, ctx)
    judges = make_judges(req.judges, ctx)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out):  # one writer per output directory
        store = ResultStore(out / "results.jsonl")
        records = run_eval(req, ctx, store, attack=attack, judges=judges)
        _write_outputs(out, records, req, ctx)
    return 0


def _write_outputs(out: Path, records: Any, req: Any, ctx: Any) -> None:
    from safetydrift.report.html import render_eval_report
    from safetydrift.runner import summarize
    from safetydrift.store import atomic_write_text

    summary = summarize(records)
    atomic_write_text(out / "summary.json", json.dumps(summary.to_json(), indent=2))
    render_eval_report(records, summary, out / "report.html",
                       title=f"safetydrift eval — {req.dataset}")
    _print_summary(summary)
    ctx.log(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'report.html'}")


def _validate(req: Any, ctx: Any) -> None:
    from safetydrift import registry
    from safetydrift.datasets import load_dataset
    from safetydrift.spec import parse_component

    check_models(req.models)
    registry.attacks.get(parse_component(req.attack).name)
    for j in req.judges:
        registry.judges.get(parse_component(j).name)
    if req.backend:  # its settings too: a typo must fail before the output directory exists
        spec = parse_component(req.backend)
        params_cls = getattr(registry.backends.get(spec.name), "Params", None)
        if params_cls is not None:
            from safetydrift.params import from_spec

            from_spec(params_cls, spec)
    load_dataset(req.dataset, ctx, req.prompt_column, req.category_column)
    for m in req.models:  # resolve (build) every model before anything is written: a model that cannot
        resolved = ctx.resolve(m)  # be found or built fails here with one line and no output directory
        if resolved.kind == "openai":  # an endpoint that does not answer at all fails here too
            from safetydrift.backends.openai_http import check_reachable

            check_reachable(resolved.url)


def _unique(values: list[str], flag: str, ctx: Any) -> list[str]:
    """Repeated inputs are evaluated once (a repeat would double n), with a warning."""
    seen = list(dict.fromkeys(values))
    if len(seen) < len(values):
        ctx.console.print(f"safetydrift: warning: {flag} repeats a value; each is evaluated once")
    return seen


def _print_summary(summary: EvalSummary) -> None:
    from rich.markup import escape
    from rich.table import Table

    from safetydrift.report.format import pct, pct_range

    t = Table(title="attack success rate")
    for col in ("model", "attack", "judge", "n", "succ.", "unscorable", "ASR", "95% CI"):
        t.add_column(col, overflow="fold")
    names = short_names(list(summary.models))
    for model, rows in summary.models.items():
        for s in rows:
            asr = pct(s.asr)
            ci = pct_range(s.ci_low, s.ci_high)
            t.add_row(escape(names[model]), escape(s.attack), escape(s.judge), str(s.n), str(s.successes), str(s.unscorable), asr, ci)
    print_table(t)
