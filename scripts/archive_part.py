"""Keep a finished free-lunch part's readings in the repository: the files ``safetydrift map`` and
``benchmarks/sweep.py --report-only`` read, without the answers or the models.

Why: a part takes up to two hours of this machine, and its output directory (answers, built variants, readings
memo) lives outside the repository; when a machine is replaced it is gone, and with it the map. The archive is
small (the cells' verdicts and evidence, the experiment result, the run ledger and the tables: ~1 MB), so the
map can be redrawn from a clean checkout (``safetydrift map docs/free-lunch/parts/* --out …``) and every
figure on ``docs/free-lunch.md`` traced to a file. It cannot be re-judged or re-read: that needs the part's
output directory (or a re-run).

    python scripts/archive_part.py out/free-lunch-qwen docs/free-lunch/parts

Writes ``DEST/<part name>/`` (``experiment.json``, ``sweep.json``, ``sweep/runs.jsonl``, ``sweep/cells.jsonl``,
``tables/*.csv``), first into a hidden sibling that is renamed into place only after ``load_part`` has read it
back, so a failed copy leaves nothing behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FILES = ("experiment.json", "sweep.json", "sweep/runs.jsonl", "sweep/cells.jsonl")


def archive(out: Path, dest: Path) -> Path:
    """Copy a finished part's readings from ``out`` to ``dest/<name>``; returns that directory. An archive of the
    same part is replaced only once the new copy has been checked."""
    import filecmp

    from safetydrift.errors import DataError
    from safetydrift.report.atlas import load_part

    part = load_part(out)  # refuses an unfinished or broken part before anything is written
    if not part.name or part.name.startswith(".") or "/" in part.name or "\\" in part.name:
        raise DataError(f"{out / 'sweep.json'}: the part's name {part.name!r} cannot name a directory")
    missing = [f for f in FILES if not (out / f).is_file()]
    if missing:
        raise DataError(f"{out / missing[0]}: missing (is this a finished `safetydrift sweep` output?)")
    final, tmp, old = dest / part.name, dest / f".archive-{part.name}", dest / f".old-{part.name}"
    for leftover in (tmp, old):  # an interrupted earlier archive
        if leftover.exists():
            shutil.rmtree(leftover)
    copied = [*FILES, *(f"tables/{c.name}" for c in sorted((out / "tables").glob("*.csv")))]
    try:
        for f in copied:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / f, tmp / f)
        bad = [f for f in copied if not filecmp.cmp(out / f, tmp / f, shallow=False)]
        if bad:
            raise DataError(f"{tmp / bad[0]}: the copy differs from {out / bad[0]}")
        if [r.to_json() for r in load_part(tmp).rows] != [r.to_json() for r in part.rows]:
            raise DataError(f"{tmp}: the copy does not read back as the part")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old.exists() and not final.exists():  # the new copy never arrived: the old archive goes back
            old.rename(final)
    return final


def main() -> None:
    from safetydrift.errors import SafetyDriftError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="a finished part's output directory (safetydrift sweep --out)")
    ap.add_argument("dest", type=Path, help="where parts are kept, e.g. docs/free-lunch/parts")
    a = ap.parse_args()
    try:
        print(f"archived {a.out} → {archive(a.out, a.dest)}")
    except (SafetyDriftError, OSError, shutil.Error) as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
