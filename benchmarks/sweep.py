"""A free-lunch map part: its first run's wall time and per-stage times, and the re-run's time from the store and
the cache, with the ratio measured on this machine (target: a re-run takes ≤ 3% of the first run).

    python benchmarks/sweep.py configs/free-lunch-map.yaml --out out/free-lunch-map [--executor ray]

Runs ``safetydrift sweep`` (a first run, or the rest of an interrupted one), then once more (the re-run), and
reads ``DIR/sweep/runs.jsonl`` (one line per invocation: phases, load) and ``DIR/sweep/cells.jsonl`` (seconds
per cell), keeping only this config's cells and runs. The first run's time is the sum of its cells' seconds
(an interrupted invocation's cells count too) plus the analysis of the first invocation that finished; its
per-stage table splits the cells by role (aligned, fine-tunes, each compression: build and evaluation
together) and the analysis by stage (utility readings, LogitLens, report). The re-run's time is the whole
process's wall clock. ``--report-only`` prints from the files (the re-run then without start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _role(cell: str) -> str:
    """aligned / ft / the compression label, from a sweep cell name <dose>-s<seed>-<label>."""
    parts = cell.split("-", 2)
    return cell if len(parts) < 3 else parts[2]


def _sweep(config: str, out: str, executor: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "safetydrift", "sweep", config, "--out", out,
                           "--executor", executor])
    if proc.returncode != 0:
        sys.exit(f"safetydrift sweep failed with exit code {proc.returncode}")
    return time.perf_counter() - t0


def _current(config: str) -> tuple[str, dict[str, str]]:
    """This config's map id (as ``runs.jsonl`` records it) and its cells' ledger keys (name → key)."""
    from safetydrift.experiments import load_experiment
    from safetydrift.experiments.sweep_run import _cell_key, _config_sha, cell_requests

    exp = load_experiment(config)
    return _config_sha(exp), {name: _cell_key(reqs) for name, reqs in cell_requests(exp)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--report-only", action="store_true", help="print from DIR's logs, run nothing")
    args = ap.parse_args()
    out = Path(args.out)
    con = Console()
    rerun_process = None
    if not args.report_only:
        first = _sweep(args.config, args.out, args.executor)
        con.print(f"this invocation (the first run or its remainder): {first:.0f} s")
        rerun_process = _sweep(args.config, args.out, args.executor)
    sha, keys = _current(args.config)
    runs = [r for r in _jsonl(out / "sweep" / "runs.jsonl") if r.get("config_sha256") == sha]
    if not runs:
        sys.exit(f"{out}/sweep/runs.jsonl: no finished run of this config")
    rerun = runs[-1]
    if len(runs) < 2 or rerun["cells_run"]:
        sys.exit("no re-run yet (the last finished invocation ran cells, or is the only one): run again")
    completing = runs[0]  # the first invocation that finished: it ran the analysis from nothing
    # a cell's seconds: its last ledger line under this config's key (an interrupted run's cells count too)
    secs: dict[str, float] = {}
    for c in _jsonl(out / "sweep" / "cells.jsonl"):
        if keys.get(c["cell"]) == c["key"] and c.get("seconds") is not None:
            secs[c["cell"]] = float(c["seconds"])
    if len(secs) < len(keys):
        con.print(f"[yellow]{len(keys) - len(secs)} cells have no time (ray, or resumed cells): the first run's "
                  "time is a lower bound[/]")
    by_role: dict[str, list[float]] = defaultdict(list)
    for name, v in secs.items():
        by_role[_role(name)].append(v)

    t = Table(title=f"{args.config}: the first run by stage")
    for h in ("stage", "cells", "seconds", "mean per cell"):
        t.add_column(h, justify="right" if h != "stage" else "left")
    for role, v in by_role.items():
        t.add_row(f"cells: {role} (build + evals)", str(len(v)), f"{sum(v):.0f}", f"{sum(v) / len(v):.0f}")
    analysis = dict(completing.get("analysis_stages") or {})
    analysis["verdicts, LogitLens, page"] = completing["seconds"]["verdicts_lens_page"]
    for k, v in analysis.items():
        t.add_row(f"analysis: {k}", "", f"{v:.0f}", "")
    first_wall = sum(secs.values()) + completing["seconds"]["analysis"] + completing["seconds"]["verdicts_lens_page"]
    t.add_row("[bold]first run (cells + the completing run's analysis)[/]", str(len(secs)), f"[bold]{first_wall:.0f}[/]", "")
    con.print(t)
    con.print(f"first run: {first_wall / 3600:.2f} h; the completing invocation's load {completing['load_before']} → "
              f"{completing['load_after']}; cpus {os.cpu_count()}")
    re_wall = rerun_process if rerun_process is not None else rerun["seconds"]["wall"]
    how = "process wall clock, start-up included" if rerun_process is not None else "in-process (start-up excluded)"
    ratio = re_wall / first_wall if first_wall else float("nan")
    con.print(f"re-run: {re_wall:.0f} s ({how}; {rerun['cells_skipped']} cells skipped; load {rerun['load_before']} → "
              f"{rerun['load_after']}); re-run / first run = {100 * ratio:.1f}% "
              f"(target ≤ 3%: {'met' if ratio <= 0.03 else 'NOT met'})")
    con.print(f"2-hour budget per part: {'met' if first_wall <= 7200 else 'NOT met'}")


if __name__ == "__main__":
    main()
