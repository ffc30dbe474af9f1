"""Run free-lunch parts one after another, unattended: each part's first run and re-run timed, its readings
archived in the repository, its built variants pruned.

Why: the map is a dozen two-hour parts on a 2-core machine, more than one sitting; each part must end in a
state that survives the machine (``archive_part.py``) and leaves the disk for the next one (``prune_part.py``).
One part failing stops the chain (the next part would measure on a machine in an unknown state); a finished
part is skipped, so the same command resumes the chain.

    python scripts/run_parts.py configs/free-lunch-manipulation.yaml configs/free-lunch-seeds1.yaml \\
        --out-root out --archive docs/free-lunch/parts [--no-prune]

For each config (NAME: its ``name:``): ``python benchmarks/sweep.py CONFIG --out OUT_ROOT/NAME`` (first run or its
rest, then the re-run; the table goes to ``OUT_ROOT/NAME.bench.txt``), ``scripts/archive_part.py``, then
``scripts/prune_part.py CONFIG --delete``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _step(what: str, cmd: list[str], log: Path | None = None) -> None:
    t0 = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {what}: {' '.join(cmd)}", flush=True)
    if log is None:
        proc = subprocess.run(cmd, check=False)
    else:
        with open(log, "w", encoding="utf-8") as sink:
            proc = subprocess.run(cmd, stdout=sink, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: {what} failed (exit {proc.returncode}){f'; see {log}' if log else ''}")
    print(f"[{time.strftime('%H:%M:%S')}] {what}: done in {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--out-root", type=Path, default=Path("out"))
    ap.add_argument("--archive", type=Path, default=ROOT / "docs" / "free-lunch" / "parts")
    ap.add_argument("--no-prune", action="store_true", help="keep the built variants")
    a = ap.parse_args()
    missing = [str(c) for c in a.configs if not c.is_file()]
    if missing:
        raise SystemExit(f"error: no such config: {', '.join(missing)}")
    py = sys.executable
    for i, cfg in enumerate(a.configs, 1):
        name = str((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("name") or cfg.stem)
        out = a.out_root / name
        if (a.archive / name / "sweep.json").is_file():
            print(f"part {i}/{len(a.configs)} {name}: already archived in {a.archive / name}, skipped", flush=True)
            continue
        print(f"part {i}/{len(a.configs)} {name}", flush=True)
        a.out_root.mkdir(parents=True, exist_ok=True)
        _step("sweep (first run, then re-run)", [py, str(ROOT / "benchmarks" / "sweep.py"), str(cfg), "--out", str(out)],
              a.out_root / f"{name}.bench.txt")
        _step("archive", [py, str(ROOT / "scripts" / "archive_part.py"), str(out), str(a.archive)])
        if not a.no_prune:
            _step("prune", [py, str(ROOT / "scripts" / "prune_part.py"), str(cfg), "--delete"])


if __name__ == "__main__":
    main()
