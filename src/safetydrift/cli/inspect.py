"""``safetydrift inspect RECIPE``: a variant's provenance, sizes and loss curve."""

from __future__ import annotations

import argparse
import json

from safetydrift.cli.common import make_context


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-metrics", action="store_true", help="skip perplexity/KL on the benign text sample")


def run(args: argparse.Namespace) -> int:
    from safetydrift.variants.inspect import inspect_variant

    ctx = make_context(args)
    info = inspect_variant(args.recipe, ctx, metrics=not args.no_metrics)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for k, v in info.items():
            if k != "loss_curve":
                print(f"{k:20s} {v}")
    return 0
