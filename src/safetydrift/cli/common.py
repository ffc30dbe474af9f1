"""Helpers shared by the command modules: the run context and the generation flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.types import GenerationConfig


def make_context(args: argparse.Namespace) -> Context:
    from safetydrift.context import Context, default_cache_dir

    return Context(
        cache_dir=Path(args.cache) if args.cache else default_cache_dir(),
        quiet=args.quiet,
        verify=getattr(args, "verify", "fast"),
    )


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--backend", default=None, help="backend spec (default by model kind)")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    from safetydrift.types import GenerationConfig

    return GenerationConfig(  # validates every value (one rule, in types.GenerationConfig)
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        system_prompt=args.system_prompt,
    )


def check_models(models: list[str]) -> None:
    """Every source, transform and guard of each recipe is known and its settings parse, before anything
    is loaded or written (the library's one rule, ``validation.check_recipe``)."""
    from safetydrift.validation import check_recipe

    for m in models:
        check_recipe(m)


def short_names(recipes: list[str]) -> dict[str, str]:
    """Each recipe's distinguishing tail, so three variants of one base stay tell-apart in a table."""
    from safetydrift.spec import split_recipe_steps

    steps = {r: split_recipe_steps(r) for r in recipes}
    if len(recipes) < 2:
        return {r: r for r in recipes}
    common = 0
    for group in zip(*steps.values(), strict=False):
        if len(set(group)) != 1:
            break
        common += 1
    out: dict[str, str] = {}
    for r, s in steps.items():
        tail = s[common:]
        out[r] = s[-1] if not tail else ("…>" if common else "") + ">".join(tail)
    return out


def print_table(table: Any) -> None:
    """Print a rich table at the terminal's width, or at full width into a log file or pipe."""
    import sys

    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 400, soft_wrap=False).print(table)
