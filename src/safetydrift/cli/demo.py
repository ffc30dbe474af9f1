"""``safetydrift demo``: the main job on the embedded default model (a packaged experiment YAML)."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetydrift.cli.common import make_context

DEMO_CONFIGS = {"smollm2-135m-instruct": "demo-smollm2.yaml", "qwen2.5-coder-0.5b-instruct": "demo-qwen.yaml"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", choices=sorted(DEMO_CONFIGS))
    p.add_argument("--out", default="out/demo")


def run(args: argparse.Namespace) -> int:
    from safetydrift.experiments import load_experiment, packaged_config, print_headline, run_experiment

    exp = load_experiment(packaged_config(DEMO_CONFIGS[args.model]))
    ctx = make_context(args)
    result = run_experiment(exp, Path(args.out), ctx)
    print_headline(result)
    ctx.log(f"wrote {Path(args.out) / 'report.html'}")
    return 0
