"""Judge throughput: judgements/s of each judge on the rows of a labelled CSV (default: the held-out set).

    nice -n 19 python benchmarks/judges.py [--judge keyword --judge refusal --judge harm] [--labels judge_heldout.csv] [--repeat 1]

Prints a table (judge, rows, load seconds, judging seconds, judgements/s, and the process CPU seconds of
judging with judgements per CPU-second: on a shared machine the wall-clock rate depends on the other load,
the CPU rate much less). Only speed is printed, never
agreement with the labels: accuracy is ``safetydrift judge validate``'s job, so running this benchmark
is not a look at the held-out labels. Loading (models, embedder) is timed apart from judging, and the
first judging pass is the one reported (no warm cache of the same rows), like a first run of an eval.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "src/safetydrift/judges/data/judge_heldout.csv"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from rich.table import Table

    from safetydrift.context import Context
    from safetydrift.judges.validate import read_labels
    from safetydrift.runner import make_judges
    from safetydrift.types import Item, JudgeInput

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", action="append", default=None, help="judge spec (repeatable; default keyword, refusal, harm)")
    ap.add_argument("--labels", default=str(DEFAULT_LABELS), help="CSV with request and response columns")
    ap.add_argument("--limit", type=int, default=0, help="first N rows only (0: all)")
    ap.add_argument("--repeat", type=int, default=1, help="judging passes per judge (the first is reported)")
    a = ap.parse_args()
    name = Path(a.labels).name
    rows = read_labels(Path(a.labels), label_column="refusal" if name.startswith(("judge_", "harm_")) else "label")
    rows = rows[: a.limit] if a.limit else rows
    inputs = [JudgeInput(Item.make(r.request), r.request, r.response) for r in rows]
    ctx = Context()
    table = Table(title=f"judge throughput on {Path(a.labels).name} ({len(inputs)} rows, {os.cpu_count()} CPUs)")
    for col in ("judge", "rows", "load s", "judge s", "per s", "CPU s", "per CPU-s", "later per s"):
        table.add_column(col, justify="left" if col == "judge" else "right")
    for spec in a.judge or ["keyword", "refusal", "harm"]:
        t0 = time.perf_counter()
        judge = make_judges([spec], ctx)[0]
        if hasattr(judge, "model"):  # trained judges load lazily: load here, so judging time is judging only
            judge.model()
        load = time.perf_counter() - t0
        times, cpu = [], []
        for _ in range(max(1, a.repeat)):
            t0, c0 = time.perf_counter(), time.process_time()
            judge.judge(inputs)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        later = f"{len(inputs) * (len(times) - 1) / sum(times[1:]):.1f}" if len(times) > 1 else "–"
        table.add_row(spec, str(len(inputs)), f"{load:.2f}", f"{times[0]:.2f}", f"{len(inputs) / times[0]:.1f}",
                      f"{cpu[0]:.2f}", f"{len(inputs) / max(cpu[0], 1e-9):.1f}", later)
    Console().print(table)


if __name__ == "__main__":
    main()
