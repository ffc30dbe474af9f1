"""``safetydrift build RECIPE``: build a variant into the artifact cache and print where it is."""

from __future__ import annotations

import argparse

from safetydrift.cli.common import make_context


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")


def run(args: argparse.Namespace) -> int:
    ctx = make_context(args)
    m = ctx.resolve(args.recipe)
    print(m.path if m.path else m.url)
    return 0
