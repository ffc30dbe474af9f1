"""``safetydrift sweep EXPERIMENT.yaml --out DIR``: the free-lunch map, cell by cell, resumable.

An experiment with a ``sweep:`` block (experiments/sweep.py) is run one cell (variant) at a time: built, then
evaluated on every dataset, attack and utility set, with a progress bar (and ETA) over cells. A finished cell
is written to ``DIR/sweep/cells.jsonl``; the next invocation skips it, and an interrupted cell resumes from
the result store. Then the whole experiment is analysed as ``safetydrift run`` would (every record is in the
store, so nothing is generated again), each compressed cell is read against the decision rules
(analysis/freelunch.py) and ``DIR/sweep.html`` / ``sweep.json`` are written next to ``report.html``. The runner
is ``experiments/sweep_run.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetydrift.cli.common import make_context


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment YAML with a sweep: block (see configs/free-lunch-map.yaml)")
    p.add_argument("--out", default=None, help="output directory (default out/<name>)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="how cells run: local (one after another, the default) or ray (one task per cell "
                        "and eval; needs `pip install ray`)")


def run(args: argparse.Namespace) -> int:
    from safetydrift.errors import DataError
    from safetydrift.experiments import load_experiment
    from safetydrift.experiments.executors import require_ray
    from safetydrift.experiments.sweep_run import print_verdicts, run_sweep

    exp = load_experiment(Path(args.experiment))
    if exp.sweep is None:
        raise DataError(f"{args.experiment}: no sweep: block (use `safetydrift run` for a plain experiment)")
    if args.executor == "ray":
        require_ray()  # one line before anything is built or written
    out = Path(args.out or f"out/{exp.name}")
    ctx = make_context(args)
    rows = run_sweep(exp, out, ctx, args.executor)
    print_verdicts(rows)
    ctx.log(f"wrote {out / 'sweep.html'} and {out / 'report.html'} (and sweep.json, experiment.json, figures/, "
            "tables/)")
    return 0
