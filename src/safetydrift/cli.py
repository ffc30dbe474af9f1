"""``safetydrift`` command line. Each subcommand is a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetydrift.errors import SafetyDriftError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    """Register a subcommand: the decorated function adds arguments; ``handler`` runs it."""

    def deco(add_args: Callable[[argparse.ArgumentParser], None]) -> Any:
        def bind(handler: Handler) -> Handler:
            _COMMANDS[name] = (add_args, handler)
            return handler

        add_args.help = help  # type: ignore[attr-defined]
        add_args.bind = bind  # type: ignore[attr-defined]
        return add_args

    return deco


def _ctx(args: argparse.Namespace) -> Any:
    from safetydrift.context import Context, default_cache_dir

    return Context(cache_dir=Path(args.cache) if args.cache else default_cache_dir(), quiet=args.quiet)


def _gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--backend", default=None, help="backend spec (default by model kind)")


def _gen_config(args: argparse.Namespace) -> Any:
    from safetydrift.types import GenerationConfig

    if args.max_new_tokens < 1:
        raise SafetyDriftError("--max-new-tokens must be at least 1")
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        system_prompt=args.system_prompt,
    )


# ---------------------------------------------------------------------------------------------- eval
@command("eval", "evaluate models/variants on a dataset with an attack and judges")
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, help="model spec or recipe (repeatable)")
    p.add_argument("--dataset", required=True, help="registered name or CSV/JSONL path")
    p.add_argument("--attack", default="direct")
    p.add_argument("--judge", action="append", default=None, help="judge spec (repeatable; default keyword)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--prompt-column", default=None)
    p.add_argument("--category-column", default=None)
    p.add_argument("--out", required=True, help="output directory")
    _gen_args(p)


@_eval_args.bind
def _eval(args: argparse.Namespace) -> int:
    from safetydrift.report.html import render_eval_report
    from safetydrift.runner import EvalRequest, run_eval, summarize
    from safetydrift.store import ResultStore, atomic_write_text

    ctx = _ctx(args)
    if args.limit is not None and args.limit < 1:
        raise SafetyDriftError("--limit must be at least 1")
    req = EvalRequest(
        models=args.model,
        dataset=args.dataset,
        attack=args.attack,
        judges=args.judge or ["keyword"],
        limit=args.limit,
        gen=_gen_config(args),
        backend=args.backend,
        prompt_column=args.prompt_column,
        category_column=args.category_column,
    )
    # Validate every spec, and build the attack and judges, before anything is written.
    from safetydrift.runner import make_attack, make_judges

    _validate_eval(req, ctx)
    attack = make_attack(req.attack, ctx)
    judges = make_judges(req.judges, ctx)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "results.jsonl")
    records = run_eval(req, ctx, store, attack=attack, judges=judges)
    summary = summarize(records)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    render_eval_report(records, summary, out / "report.html", title=f"safetydrift eval — {req.dataset}")
    _print_summary(summary, ctx)
    ctx.log(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'report.html'}")
    return 0


def _validate_eval(req: Any, ctx: Any) -> None:
    from safetydrift import registry
    from safetydrift.datasets import load_dataset
    from safetydrift.spec import parse_component, parse_recipe

    for m in req.models:
        r = parse_recipe(m)
        registry.sources.get(r.model.name)
        for t in r.transforms:
            registry.transforms.get(t.name)
    registry.attacks.get(parse_component(req.attack).name)
    for j in req.judges:
        registry.judges.get(parse_component(j).name)
    if req.backend:
        registry.backends.get(parse_component(req.backend).name)
    load_dataset(req.dataset, ctx, req.prompt_column, req.category_column)
    for m in req.models:  # resolve (build) every model before anything is written: a model that cannot
        resolved = ctx.resolve(m)  # be found or built fails here with one line and no output directory
        if resolved.kind == "openai":  # an endpoint that does not answer at all fails here too
            from safetydrift.backends.openai_http import check_reachable

            check_reachable(resolved.url)


def _print_summary(summary: dict[str, Any], ctx: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="attack success rate")
    for col in ("model", "attack", "judge", "n", "succ.", "unscorable", "ASR", "95% CI"):
        t.add_column(col)
    for model, m in summary["models"].items():
        for s in m["by_attack_judge"]:
            asr = "–" if s["asr"] is None else f"{100 * s['asr']:.1f}%"
            ci = f"{100 * s['ci_low']:.1f}–{100 * s['ci_high']:.1f}%"
            t.add_row(model, s["attack"], s["judge"], str(s["n"]), str(s["successes"]), str(s["unscorable"]), asr, ci)
    Console().print(t)


# ------------------------------------------------------------------------------------ listing commands
def _list(kind: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from safetydrift import registry

        reg = getattr(registry, kind)
        for e in reg.entries():
            print(f"{e.name:32s} {e.help}")
        return 0

    return run


for _name, _kind, _help in (
    ("models", "sources", "list model sources"),
    ("datasets", "datasets", "list datasets"),
    ("attacks", "attacks", "list attacks"),
    ("judges", "judges", "list judges"),
    ("transforms", "transforms", "list variant transforms"),
    ("backends", "backends", "list backends"),
):
    command(_name, _help)(lambda p: None).bind(_list(_kind))


# ------------------------------------------------------------------------------------ build / inspect
@command("build", "build a variant recipe into the artifact cache")
def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")


@_build_args.bind
def _build(args: argparse.Namespace) -> int:
    ctx = _ctx(args)
    m = ctx.resolve(args.recipe)
    print(m.path if m.path else m.url)
    return 0


@command("inspect", "print a variant's provenance, sizes and loss curve")
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-metrics", action="store_true", help="skip perplexity/KL on the benign text sample")


@_inspect_args.bind
def _inspect(args: argparse.Namespace) -> int:
    from safetydrift.variants.inspect import inspect_variant

    ctx = _ctx(args)
    info = inspect_variant(args.recipe, ctx, metrics=not args.no_metrics)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            if k != "loss_curve":
                print(f"{k:20s} {v}")
    return 0


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from safetydrift import __version__

    parser = argparse.ArgumentParser(prog="safetydrift", description=__doc__)
    parser.add_argument("--version", action="version", version=f"safetydrift {__version__}")
    parser.add_argument("--cache", default=None, help="artifact cache (default $SAFETYDRIFT_CACHE or user cache)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _load_extra_commands()
    for name, (add_args, handler) in _COMMANDS.items():
        p = sub.add_parser(name, help=add_args.help)  # type: ignore[attr-defined]
        add_args(p)
        p.set_defaults(_handler=handler)
    return parser


def _load_extra_commands() -> None:
    """Commands that live beside their feature (serve, run, demo, logitlens, judge) register on import."""
    import importlib

    for mod in ("safetydrift.serve", "safetydrift.experiments", "safetydrift.analysis.cli", "safetydrift.judges.validate"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise




def main(argv: list[str] | None = None) -> int:
    # `python -m safetydrift.cli` would load this module twice; commands registered elsewhere must land here.
    sys.modules.setdefault("safetydrift.cli", sys.modules[__name__])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never fetch weights at run time
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' per-file load/save bars are noise next to our own stage progress (training keeps its bar)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # OpenMP threads that spin while waiting make torch 2-3x slower whenever anything else runs on a small
    # machine (measured: a SmolLM2 training step 114-148 s spinning vs 39-57 s passive under load).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # torchao (imported by transformers and peft on every model load once installed) logs that its CUDA
    # kernels cannot load on a CPU machine, and torch logs a deprecation for its enums: noise, not errors.
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._handler(args)
    except SafetyDriftError as e:
        if args.debug:
            raise
        print(f"safetydrift: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("safetydrift: interrupted (finished samples are saved; run the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure still gets one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"safetydrift: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

