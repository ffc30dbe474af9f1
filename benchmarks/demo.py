"""`safetydrift demo` from an empty cache, with the time broken down by stage.

    python benchmarks/demo.py [--model smollm2-135m-instruct] [--keep]

Runs the demo with a fresh SAFETYDRIFT_CACHE and output directory (so the GGUF conversion, every build
and every evaluation is included), then prints the stage timings recorded in experiment.json with each
stage's share of the wall clock, the machine's speed (seconds per `align` training step, the figure that
differs most between machines of one kind) and load, and the total against the 10-minute target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache and output")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sd-demo-"))
    env = dict(os.environ, SAFETYDRIFT_CACHE=str(tmp / "cache"))
    out = tmp / "out"
    load0 = f"{os.getloadavg()[0]:.2f}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "safetydrift", "demo", "--model", args.model, "--out", str(out)],
                          env=env)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed with exit code {proc.returncode}")
    exp = json.loads((out / "experiment.json").read_text())
    timings = exp["provenance"]["timings_s"]
    t = Table(title=f"safetydrift demo --model {args.model} from an empty cache")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    t.add_column("share", justify="right")
    for k, v in timings.items():
        t.add_row(k, f"{v:.0f}", f"{100 * v / total:.0f}%")
    rest = total - sum(timings.values())
    t.add_row("process start, loading, other", f"{rest:.0f}", f"{100 * rest / total:.0f}%")
    t.add_row("[bold]total (wall clock)[/]", f"[bold]{total:.0f}[/]", "100%")
    con = Console()
    con.print(t)
    for v in exp.get("variants", []):
        prov = ((v.get("manifest") or {}).get("provenance") or {}) if isinstance(v, dict) else {}
        if prov.get("seconds_per_step") is not None:
            con.print(f"{v.get('name')}: {prov['steps']} training steps, {prov['seconds_per_step']} s per step "
                      f"({prov.get('sft', {}).get('precision', '?')})")
    con.print(f"load average before / after: {load0} / {os.getloadavg()[0]:.2f}")
    con.print(f"10-minute target: {'met' if total <= 600 else 'NOT met'} ({total:.0f} s, {total / 60:.1f} min)")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
