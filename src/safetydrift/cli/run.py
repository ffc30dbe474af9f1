"""``safetydrift run EXPERIMENT.yaml``: build and evaluate an experiment grid, compare, report."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetydrift.cli.common import make_context


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML (see configs/)")
    p.add_argument("--out", default=None, help="output directory (default out/<name>)")
    p.add_argument("--plan", action="store_true",
                   help="print the TAP/PAIR trees, calls per role and an estimated time (after a short "
                        "calibration of each role's model), then exit without running")


def run(args: argparse.Namespace) -> int:
    from safetydrift.experiments import load_experiment, print_headline, run_experiment

    exp = load_experiment(Path(args.experiment))
    out = Path(args.out or f"out/{exp.name}")
    ctx = make_context(args)
    if args.plan:
        from safetydrift.attacks.plan import Calibrator, format_plan, plan_requests, requests_for

        print(format_plan(plan_requests(requests_for(exp), ctx, Calibrator(ctx)), exp.name))
        return 0
    result = run_experiment(exp, out, ctx)
    print_headline(result)
    ctx.log(f"wrote {out / 'report.html'} (and experiment.json, results.jsonl, figures/, tables/)")
    return 0
