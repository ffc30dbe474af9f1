"""Multiple-choice utility: each item's context run once for all its choices (shared prefix) against every
choice as a full sequence, on one model, timed in the same run (target: the shared prefix at least 2× faster,
the same answers).

Measured 2026-12-03 on SmolLM2-135M-Instruct, 100 items (``--model smollm2-135m-instruct --rounds 2``): idle,
2 threads, load 1.0 → 2.0: full 32.9 s, shared 39.0 s, **0.84×** (target not met, so full sequences stay the
default); with one thread beside a 2-thread job (``OMP_NUM_THREADS=1 … --items 40 --rounds 1``): 1.86×; two
threads beside a 2-thread job: 0.42×. Same picks every time, largest |Δ ll| 2.5e-5. The contexts here are
short (a question, ~15 tokens), so copying them saves little while an item at a time loses the batches.

    python benchmarks/mc.py [--model "smollm2-135m-instruct>align"] [--items 100] [--rounds 2]

The two ways alternate for ``--rounds`` rounds (so a change in the machine's load falls on both), and the
median time of each is compared. Printed: seconds and items/s of each, the ratio, the largest difference of
any choice's log-likelihood and whether acc and acc_norm pick the same choice on every item. The model is
resolved (built if missing) before timing; its load counts in neither.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from rich.table import Table

    from safetydrift.analysis.mc import load_items, score_mc
    from safetydrift.context import Context

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct>align")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    ctx = Context(quiet=True)
    model = ctx.resolve(a.model)
    items = load_items(a.items)
    times: dict[bool, list[float]] = {False: [], True: []}
    results = {}
    load0 = os.getloadavg()[0]
    for _ in range(a.rounds):
        for shared in (False, True):
            t0 = time.perf_counter()
            res = score_mc(model, items, shared_prefix=shared)
            times[shared].append(time.perf_counter() - t0)
            results[shared] = res
    full, pre = results[False], results[True]
    diff = max(abs(x - y) for a_, b_ in zip(full.lls, pre.lls, strict=True) for x, y in zip(a_, b_, strict=True))
    same = [full.correct(n) == pre.correct(n) for n in (False, True)]
    t = Table(title=f"multiple choice on {a.model}: {len(items)} items, {a.rounds} rounds (model load included "
                    "in each, as in a sweep's analysis)")
    for col in ("way", "median s", "items/s", "acc", "acc_norm"):
        t.add_column(col)
    for shared, label in ((False, "full sequences (length-sorted batches of 16)"), (True, "shared prefix")):
        med = statistics.median(times[shared])
        s = results[shared].summary()
        t.add_row(label, f"{med:.1f}", f"{len(items) / med:.1f}", f"{s['acc']:.3f}", f"{s['acc_norm']:.3f}")
    Console().print(t)
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"speed-up (full / shared prefix, medians): {ratio:.2f}x (target ≥ 2x: {'met' if ratio >= 2 else 'NOT met'})")
    print(f"largest |Δ ll| of any choice: {diff:.2e}; same picks: acc {same[0]}, acc_norm {same[1]}")
    print(f"load average {load0:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
