"""Free the disk that a finished free-lunch part's built variants take, keeping everything another part needs.

Why: every variant of a sweep is a materialised fp32 checkpoint (SmolLM2: 0.5–1.1 GB; Qwen2.5-0.5B: 2–4 GB),
so the whole map does not fit on a 250 GB disk shared with other work. A finished part needs its built
variants only for a re-run (its answers are in the result store, its readings in the readings memo); once that
re-run has been measured (``benchmarks/sweep.py``) they can go, and a later re-run rebuilds them.

    python scripts/prune_part.py configs/free-lunch-band.yaml            # what would go, and its size
    python scripts/prune_part.py configs/free-lunch-band.yaml --delete   # remove it

An artifact goes only if its recipe is one of the part's variants and is not any model, or any model in the
chain of any model, of the packaged configs named by ``--keep`` (default: every other packaged config, the demos
and the other parts included). Recipes are compared as the builder keys them (each step's typed settings after
defaults), against the ``recipe`` each artifact's manifest records. A directory is first renamed out of the cache's
namespace, then removed, so an interrupted run never leaves a half-deleted artifact that looks whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safetydrift.context import Context


def _canonical_chain(recipe: str, ctx: Context) -> list[str]:
    """The recipe and every prefix of its chain (the parents a build needs), each as the builder keys it: the
    model, then each step's name and typed settings after defaults (``lr=1e-4`` and ``lr=0.0001``, or a default
    written out, are one recipe, as they are one artifact)."""
    import json

    from safetydrift.guards.spec import GUARD_STEP
    from safetydrift.spec import parse_recipe
    from safetydrift.variants.builder import make_transform, resolved_settings

    r = parse_recipe(recipe)
    out, key = [], str(r.model)
    out.append(key)
    for step in r.transforms:
        part = str(step) if step.name == GUARD_STEP else \
            f"{step.name}:{json.dumps(resolved_settings(make_transform(step, ctx)), sort_keys=True, default=str)}"
        key = f"{key}>{part}"
        out.append(key)
    return out


def _recipes(config: str | Path) -> list[str]:
    from safetydrift.experiments import load_experiment

    return [v.recipe for v in load_experiment(str(config)).variants]


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.is_symlink())


def plan(part: str | Path, keep: list[str], artifacts: Path, ctx: Context) -> list[tuple[Path, str, int]]:
    """(artifact dir, its spec, bytes) for each artifact of ``part`` that no ``keep`` config needs."""
    from safetydrift.errors import SafetyDriftError

    def canon(recipe: str) -> str:
        return _canonical_chain(recipe, ctx)[-1]

    mine = {canon(r) for r in _recipes(part)}
    needed = {c for cfg in keep for r in _recipes(cfg) for c in _canonical_chain(r, ctx)}
    out = []
    for manifest in sorted(artifacts.glob("*/manifest.json")):
        if manifest.parent.name.startswith("."):  # a build in progress (.build-*) or a removal (.trash-*)
            continue
        try:
            recipe = json.loads(manifest.read_text(encoding="utf-8"))["recipe"]
            key = canon(recipe)
        except (ValueError, KeyError, OSError, SafetyDriftError):
            continue  # not a variant this script can name: left alone
        if key in mine and key not in needed:
            out.append((manifest.parent, recipe, _dir_bytes(manifest.parent)))
    return out


def main(argv: list[str] | None = None) -> int:
    from safetydrift.context import Context, default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", help="the finished part's experiment YAML")
    ap.add_argument("--keep", action="append", default=None,
                    help="a config whose models (and their chains) stay; repeatable (default: every other packaged config)")
    ap.add_argument("--cache", type=Path, default=None, help="cache directory (default: the safetydrift cache)")
    ap.add_argument("--delete", action="store_true", help="remove the artifacts (default: only list them)")
    a = ap.parse_args(argv)
    part = Path(a.part)
    if not part.is_file():
        print(f"prune_part: {part}: no such file", file=sys.stderr)
        return 2
    keep = a.keep if a.keep is not None else sorted(
        str(p) for p in files("safetydrift.configs").iterdir()
        if p.name.endswith(".yaml") and p.name != part.name)
    cache = a.cache or default_cache_dir()
    artifacts = cache / "artifacts"
    todo = plan(part, keep, artifacts, Context(cache_dir=cache, quiet=True))
    for d, spec, n in todo:
        print(f"{n / 1e9:6.2f} GB  {d.name}  {spec}")
    total = sum(n for _, _, n in todo)
    print(f"{len(todo)} artifacts, {total / 1e9:.1f} GB" + ("" if a.delete else " (listed only: --delete removes them)"))
    if a.delete:
        for left in artifacts.glob(".trash-*"):  # what an interrupted removal left behind
            shutil.rmtree(left, ignore_errors=True)
        for d, _, _ in todo:
            trash = d.with_name(f".trash-{d.name}")  # out of the cache's namespace first: never half a variant
            d.rename(trash)
            shutil.rmtree(trash)
    return 0


if __name__ == "__main__":
    sys.exit(main())
