"""Append-only, fsync'd JSONL result store that survives ``kill -9``.

Every judged sample is one line, written with a single ``write`` and ``fsync``'d before the next unit
starts, so a crash loses at most the unit in flight. On open, a torn last line (a crash mid-write) is
cut off, and finished (run, unit, judge) keys are indexed so that running the same command again
generates only what is missing and never duplicates a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from safetydrift.errors import DataError


def record_key(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    return (rec["run_key"], rec["item_id"], rec["unit"], rec["judge"])


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: list[dict[str, Any]] = []
        self._keys: set[tuple[str, str, str, str]] = set()
        self._responses: dict[tuple[str, str, str], dict[str, Any]] = {}  # first record per unit, any judge
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        lineno = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl == -1:  # torn last line: no newline was written
                break
            line = data[pos:nl]
            lineno += 1
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if data.find(b"\n", nl + 1) == -1 and not data[nl + 1 :].strip():
                        break  # the last line is garbage: treat as torn
                    raise DataError(f"{self.path}:{lineno}: corrupt result record (not a crash tail)") from None
                self._add(rec)
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def _add(self, rec: dict[str, Any]) -> None:
        key = record_key(rec)
        if key in self._keys:
            return
        self._keys.add(key)
        self._records.append(rec)
        self._responses.setdefault(key[:3], rec)

    def has(self, run_key: str, item_id: str, unit: str, judge: str) -> bool:
        return (run_key, item_id, unit, judge) in self._keys

    def find_response(self, run_key: str, item_id: str, unit: str) -> dict[str, Any] | None:
        """A stored record for this unit under any judge (to judge it anew without regenerating)."""
        return self._responses.get((run_key, item_id, unit))

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        new = [r for r in records if record_key(r) not in self._keys]
        if not new:
            return
        blob = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in new).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        for r in new:
            self._add(r)

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file or nothing: outputs are never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
