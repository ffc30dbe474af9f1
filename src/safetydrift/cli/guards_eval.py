"""``safetydrift guard-eval``: every guard configuration on held-out material (see guards/evaluate.py).

Held-out harmful requests (Do-Not-Answer), the same kind inside in-the-wild jailbreak templates, and
benign look-alikes; per configuration the block rate, the templated block rate, the false-refusal rate
(each with a Wilson 95% CI) and the guard's latency per request. Writes ``guards.csv``, ``guards.md`` and
``summary.json`` into ``--out``; answers and outcomes are cached there, so a rerun only does what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetydrift.cli.common import check_models, make_context
from safetydrift.errors import SafetyDriftError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from safetydrift.guards.evaluate import DEFAULT_GENERATOR, DEFAULT_JUDGE

    p.add_argument("--out", default="out/guards", help="output directory (default out/guards)")
    p.add_argument("--generator", default=DEFAULT_GENERATOR,
                   help=f"the fixed model whose answers output filters judge (default {DEFAULT_GENERATOR}: "
                        "it complies with nearly everything, so the filter is what stops a request)")
    p.add_argument("--config", action="append", default=None,
                   help="a guard step, e.g. guard:input=classifier,output=keyword (repeatable; default: each "
                        "filter alone, the demo's combination, the keyword output rule before and after)")
    p.add_argument("--judge", default=DEFAULT_JUDGE, help=f"the output=llm judge of the default set ({DEFAULT_JUDGE})")
    p.add_argument("--n-harmful", type=int, default=150, help="Do-Not-Answer questions (default 150 of 821)")
    p.add_argument("--n-templated", type=int, default=80, help="jailbreak-templated questions (default 80)")
    p.add_argument("--n-benign", type=int, default=260, help="benign look-alikes (default all 260)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generator answer length (default 64)")
    p.add_argument("--batch", type=int, default=16, help="requests per guard call (default 16)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from safetydrift.guards.eval_table import cell
    from safetydrift.guards.evaluate import default_configs, evaluate, normalise

    for flag in ("n_harmful", "n_templated", "n_benign", "max_new_tokens", "batch"):
        if getattr(args, flag) < 1:
            raise SafetyDriftError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.seed < 0:
        raise SafetyDriftError("--seed must be at least 0")
    configs = [normalise(c) for c in args.config] if args.config else default_configs(args.judge)
    check_models([args.generator, *(f"{args.generator}>{c}" for c in configs)])  # typos fail before loading
    ctx = make_context(args)
    out = Path(args.out)
    rows = evaluate(ctx, out, generator=args.generator, configs=configs, n_harmful=args.n_harmful,
                    n_templated=args.n_templated, n_benign=args.n_benign, max_new_tokens=args.max_new_tokens,
                    batch=args.batch, seed=args.seed)
    if not args.quiet:
        for r in rows:
            print(f"{r.config:55s} {r.set:14s} {cell(r)}  {r.latency_mean_ms:.1f} ms")
        print(f"wrote {out / 'guards.csv'} and {out / 'guards.md'}")
    return 0
