"""A free-lunch map part: its first run's wall time and per-stage times, and the re-run's time from the store and
the cache, with the ratio measured on this machine (target: a re-run takes ≤ 3% of the first run).

    python benchmarks/sweep.py configs/free-lunch-map.yaml --out out/free-lunch-map [--executor ray]

Runs ``safetydrift sweep`` (a first run, or the rest of an interrupted one), then once more (the re-run), and
reads ``DIR/sweep/runs.jsonl`` (one line per invocation: phases, load) and ``DIR/sweep/cells.jsonl`` (seconds
per cell). The first run is every invocation before the re-run that ran cells; its per-stage table splits the
cells by role (aligned, fine-tunes, each compression: build and evaluation together) and the analysis by
stage (``experiment.json``: utility readings, LogitLens, report). ``--report-only`` prints from the files.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--report-only", action="store_true", help="print from DIR's logs, run nothing")
    args = ap.parse_args()
    out = Path(args.out)
    con = Console()
    if not args.report_only:
        before = len(_jsonl(out / "sweep" / "runs.jsonl"))
        first = _sweep(args.config, args.out, args.executor)
        if len(_jsonl(out / "sweep" / "runs.jsonl")) == before:
            sys.exit("the sweep wrote no runs.jsonl line (an older safetydrift?)")
        con.print(f"this invocation (first run or its remainder): {first:.0f} s")
        _sweep(args.config, args.out, args.executor)
    runs = _jsonl(out / "sweep" / "runs.jsonl")
    if not runs:
        sys.exit(f"{out}/sweep/runs.jsonl: no runs recorded")
    rerun = runs[-1]
    if rerun["cells_run"]:
        sys.exit("the last invocation still ran cells: run again for a re-run")
    firsts = [r for r in runs[:-1] if r["cells_run"]]
    cells = _jsonl(out / "sweep" / "cells.jsonl")
    by_role: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        if c.get("seconds") is not None:
            by_role[_role(c["cell"])].append(float(c["seconds"]))

    t = Table(title=f"{args.config}: the first run by stage")
    for h in ("stage", "cells", "seconds", "mean per cell"):
        t.add_column(h, justify="right" if h != "stage" else "left")
    for role, secs in by_role.items():
        t.add_row(f"cells: {role} (build + evals)", str(len(secs)), f"{sum(secs):.0f}", f"{sum(secs) / len(secs):.0f}")
    analysis: dict[str, float] = defaultdict(float)
    for r in firsts:
        for k, v in (r.get("analysis_stages") or {}).items():
            analysis[k] += float(v)
        analysis["verdicts, LogitLens, page"] += r["seconds"]["verdicts_lens_page"]
    for k, v in analysis.items():
        t.add_row(f"analysis: {k}", "", f"{v:.0f}", "")
    first_wall = sum(r["seconds"]["wall"] for r in firsts)
    t.add_row("[bold]first run (wall clock, every invocation that ran cells)[/]", str(sum(r["cells_run"] for r in firsts)),
              f"[bold]{first_wall:.0f}[/]", "")
    con.print(t)
    loads = ", ".join(f"{r['load_before']} → {r['load_after']}" for r in firsts)
    con.print(f"first run: {len(firsts)} invocation(s), {first_wall / 3600:.2f} h; load before → after: {loads}; "
              f"cpus {os.cpu_count()}")
    re_wall = rerun["seconds"]["wall"]
    ratio = re_wall / first_wall if first_wall else float("nan")
    con.print(f"re-run: {re_wall:.0f} s ({rerun['cells_skipped']} cells skipped; load {rerun['load_before']} → "
              f"{rerun['load_after']}); re-run / first run = {100 * ratio:.1f}% "
              f"(target ≤ 3%: {'met' if ratio <= 0.03 else 'NOT met'})")
    con.print(f"2-hour budget per part: {'met' if first_wall <= 7200 else 'NOT met'}")


if __name__ == "__main__":
    main()
