"""``safetydrift map DIR [DIR ...] --out OUT``: one free-lunch map from several finished parts.

Each part (``safetydrift sweep configs/free-lunch-*.yaml``) is sized to run in under two hours, so its page
shows a few doses; this command draws the union (``report/atlas.py``): ASR and R against every dose of every
part, the frontier, and every cell's verdict with the part that decided it. It reads the parts' outputs only.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="+", help="finished sweep output directories (each with sweep.json and "
                                            "experiment.json), first one's base and aligned cell taken")
    p.add_argument("--out", required=True, help="output directory for map.html, figures/ and tables/")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from safetydrift.report.atlas import combine, load_part, render_map

    parts = [load_part(Path(d)) for d in args.parts]  # every part read and checked before anything is written
    combine(parts)
    page = render_map(parts, Path(args.out))
    if not args.quiet:
        Console(stderr=True).print(f"wrote {page} (and figures/, tables/map_cells.csv) from {len(parts)} parts")
    return 0
