"""Content hashes for provenance, for naming cached artifacts, and for verifying them.

Weights are hundreds of MB, so a file's hash is memoised, but only against a stat fingerprint that a
rewrite cannot keep: device, inode, size, mtime *and* ctime (ctime changes on every write or rename and
cannot be set back by a user). A file overwritten in place at the same size and with its mtime restored
therefore gets hashed again. Memos live in the cache (``<cache>/hashes/``), never next to users' files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Literal

VerifyPolicy = Literal["full", "fast", "off"]
VERIFY_POLICIES: tuple[VerifyPolicy, ...] = ("full", "fast", "off")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin")

# In-process memo: a pure function's results keyed by the stat fingerprint ("hash on first use per process").
_SEEN: dict[tuple[Any, ...], str] = {}
_LOCK = threading.Lock()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


def fingerprint(path: Path) -> tuple[Any, ...]:
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stream_sha256(path: Path) -> str:
    """Streaming hash with one reused buffer (no whole-file read; page-cache and mmap friendly)."""
    with Path(path).open("rb", buffering=0) as f:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        buf = bytearray(1 << 22)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
        return h.hexdigest()


def _memo_file(memo_dir: Path, fp: tuple[Any, ...]) -> Path:
    return Path(memo_dir) / (sha256_bytes(str(fp[0]).encode())[:32] + ".json")


def sha256_file(path: Path, *, memo_dir: Path | None = None, trust_memo: bool = True) -> str:
    """sha256 of a file, memoised in this process and (with ``memo_dir``) across processes.

    ``trust_memo=False`` ignores the persistent memo (policy ``full``: every process re-reads each file
    once); the in-process memo is always used because the fingerprint includes ctime.
    """
    path = Path(path)
    fp = fingerprint(path)
    with _LOCK:
        if fp in _SEEN:
            return _SEEN[fp]
    side = _memo_file(memo_dir, fp) if memo_dir is not None else None
    if side is not None and trust_memo and side.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            memo = json.loads(side.read_text())
            if tuple(memo["fingerprint"]) == tuple(json.loads(json.dumps(list(fp)))):
                digest = str(memo["sha256"])
                with _LOCK:
                    _SEEN[fp] = digest
                return digest
    digest = _stream_sha256(path)
    if fingerprint(path) != fp:  # written while we read it: never memoise a torn read
        return digest
    with _LOCK:
        _SEEN[fp] = digest
    if side is not None:
        with contextlib.suppress(OSError):
            side.parent.mkdir(parents=True, exist_ok=True)
            tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": list(fp), "sha256": digest}))
            os.replace(tmp, side)
    return digest


def weight_files(path: Path) -> list[Path]:
    path = Path(path)
    return sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def sha256_dir_weights(path: Path, *, memo_dir: Path | None = None, trust_memo: bool = True) -> str:
    """Hash of a checkpoint directory's weight files (safetensors/gguf/bin), in name order."""
    files = weight_files(path)
    if not files:
        raise FileNotFoundError(f"no weight files in {path}")
    return sha256_json([(p.name, sha256_file(p, memo_dir=memo_dir, trust_memo=trust_memo)) for p in files])


def sha256_weights(path: Path, *, memo_dir: Path | None = None, trust_memo: bool = True) -> str:
    """A weights hash for a GGUF file or a checkpoint directory."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p, memo_dir=memo_dir, trust_memo=trust_memo)
    return sha256_dir_weights(p, memo_dir=memo_dir, trust_memo=trust_memo)
