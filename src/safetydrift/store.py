"""Append-only, fsync'd JSONL result store that survives ``kill -9``.

Every judged sample is one line (a :class:`~safetydrift.records.Record` as ``Record.to_json``), written
with a single ``write`` and ``fsync``'d before the next unit starts, so a crash loses at most the unit in
flight. On open, a torn last line (a crash mid-write) is cut off, and finished (run, unit, judge) keys are
indexed so that running the same command again generates only what is missing and never duplicates a
record. Lines of the previous format (no ``schema`` field) are read as well: an old store resumes.

A record whose generation failed (``error`` set: an endpoint timeout, an OOM) is not a finished sample:
the next run asks again (``retry_errors``), and a later line with the same key supersedes it. One process
owns an output directory at a time (:class:`OutputLock`), so two writers never double every record.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from safetydrift.errors import DataError
from safetydrift.records import Record

LOCK_NAME = ".safetydrift.lock"


class OutputLock:
    """An exclusive advisory lock on an output directory, held while a run writes into it.

    ``flock`` is released by the kernel when the process dies, so a killed run never leaves a stale lock;
    a second writer gets a one-line error naming the holder's pid instead of doubling every record.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise DataError(
                    f"{self.path.parent} is being written by another safetydrift process (pid {holder}); "
                    f"wait for it or use another --out"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: list[Record] = []
        self._keys: set[tuple[str, str, str, str]] = set()
        self._index: dict[tuple[str, str, str, str], int] = {}  # key → position in _records
        self._responses: dict[tuple[str, str, str], Record] = {}  # first record per unit, any judge
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
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    if data.find(b"\n", nl + 1) == -1 and not data[nl + 1 :].strip():
                        break  # the last line is garbage: treat as torn
                    raise DataError(f"{self.path}:{lineno}: corrupt result record (not a crash tail)") from None
                try:
                    rec = Record.from_json(obj)
                except DataError as e:
                    raise DataError(f"{self.path}:{lineno}: {e}") from None
                self._add(rec)
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def _add(self, rec: Record) -> None:
        key = rec.key
        if key in self._keys:
            old = self._index[key]
            if self._records[old].error is None:
                return  # a finished sample is never replaced
            self._records[old] = rec  # a retried failure supersedes the failed attempt
        else:
            self._keys.add(key)
            self._index[key] = len(self._records)
            self._records.append(rec)
        prev = self._responses.get(key[:3])
        if prev is None or (prev.error is not None and rec.error is None):
            self._responses[key[:3]] = rec

    def _superseded(self, rec: Record) -> bool:
        """Whether ``rec`` may be written: new key, or it replaces a failed generation."""
        if rec.key not in self._keys:
            return True
        return self._records[self._index[rec.key]].error is not None and rec.error is None

    def has(self, run_key: str, item_id: str, unit: str, judge: str, *, retry_errors: bool = False) -> bool:
        """Whether this sample is finished (with ``retry_errors``, a failed generation is not)."""
        key = (run_key, item_id, unit, judge)
        if key not in self._keys:
            return False
        return not (retry_errors and self._records[self._index[key]].error is not None)

    def find_response(self, run_key: str, item_id: str, unit: str) -> Record | None:
        """A stored record for this unit under any judge (to judge it anew without regenerating);
        a record with an answer is preferred over a failed generation."""
        return self._responses.get((run_key, item_id, unit))

    def append(self, records: Iterable[Record]) -> None:
        """Write the records not stored yet in one ``write`` + ``fsync`` (a unit's judges land together)."""
        new = [r for r in records if self._superseded(r)]
        if not new:
            return
        blob = "".join(json.dumps(r.to_json(), ensure_ascii=False, default=str) + "\n" for r in new).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        for r in new:
            self._add(r)

    def records(self) -> list[Record]:
        return list(self._records)

    def __iter__(self) -> Iterator[Record]:
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
