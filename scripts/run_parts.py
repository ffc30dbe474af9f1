"""Run free-lunch parts one after another, unattended: each part's first run and re-run timed, its readings
archived in the repository, its built variants pruned.

Why: the map is a dozen two-hour parts on a 2-core machine, more than one sitting; each part must end in a
state that survives the machine (``archive_part.py``) and leaves the disk for the next one (``prune_part.py``).
One part failing stops the chain (the next part would measure on a machine in an unknown state); an archived
part is not run again (only pruned), so the same command resumes the chain.

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
        with open(log, "a", encoding="utf-8") as sink:  # a resumed part's log keeps the earlier attempts
            proc = subprocess.run(cmd, stdout=sink, check=False)
    if proc.returncode != 0:
        where = f"; its table is in {log}, its error above" if log else ""
        raise SystemExit(f"error: {what} failed (exit {proc.returncode}){where}")
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
    names = []
    for cfg in a.configs:
        try:
            raw = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise SystemExit(f"error: {cfg}: not readable YAML ({e.__class__.__name__})") from None
        if not isinstance(raw, dict):
            raise SystemExit(f"error: {cfg}: not an experiment config (a mapping)")
        names.append(str(raw.get("name") or cfg.stem))
    a.out_root.mkdir(parents=True, exist_ok=True)
    for i, (cfg, name) in enumerate(zip(a.configs, names, strict=True), 1):
        out = a.out_root / name
        if (a.archive / name / "sweep.json").is_file():
            print(f"part {i}/{len(a.configs)} {name}: already archived in {a.archive / name}", flush=True)
        else:
            print(f"part {i}/{len(a.configs)} {name}", flush=True)
            _step("sweep (first run, then re-run)", [py, str(ROOT / "benchmarks" / "sweep.py"), str(cfg), "--out",
                                                     str(out)], a.out_root / f"{name}.bench.txt")
            _step("archive", [py, str(ROOT / "scripts" / "archive_part.py"), str(out), str(a.archive)])
        if not a.no_prune:  # also for an archived part, whose prune may not have run (it is idempotent)
            _step("prune", [py, str(ROOT / "scripts" / "prune_part.py"), str(cfg), "--delete"])

if __name__ == "__main__":
    main()
