"""Verified artifacts: a built variant is used only if its files are the ones its manifest recorded.

A meter that silently measures the wrong weights is worse than one that crashes, so every file of a
built variant is recorded in its manifest (relative path, size, sha256) and checked before use under the
context's policy (``Context.verify``):

- ``full``: every file is hashed once per process (a same-size overwrite or bit rot is caught);
- ``fast``: hashes come from the memo when the stat fingerprint (inode, size, mtime, ctime) still
  matches, which any rewrite changes;
- ``off``: files must exist with their recorded sizes.

Builds happen in ``.build-<key>-p<pid>-*`` temporary directories; one whose process is gone (killed
with SIGKILL, where no cleanup can run) is removed by the next build.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safetydrift.context import Context

MANIFEST = "manifest.json"
BUILD_PREFIX = ".build-"


def file_table(root: Path, ctx: Context) -> dict[str, dict[str, Any]]:
    """Every regular file under ``root`` except the manifest: relative path → size and sha256."""
    root = Path(root)
    table: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != MANIFEST:
            table[p.relative_to(root).as_posix()] = {"size": p.stat().st_size, "sha256": ctx.hash_file(p)}
    return table


def verify_artifact(root: Path, manifest: dict[str, Any], ctx: Context) -> str | None:
    """None when the artifact matches its manifest, else a one-line reason."""
    root = Path(root)
    files: dict[str, dict[str, Any]] | None = manifest.get("files")
    if files is None:  # manifests written before files were recorded: check the weights hash instead
        path = root / str(manifest.get("path", ""))
        if not path.exists():
            return f"{path.name} is missing"
        if ctx.verify == "off":
            return None
        try:
            got = ctx.hash_weights(path)
        except (FileNotFoundError, OSError) as e:
            return f"cannot read the weights: {e}"
        return None if got == manifest.get("weights_sha256") else "its weights hash differs from the manifest"
    for rel, want in files.items():
        p = root / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != want["size"]:
            return f"{rel} has {size} bytes, the manifest says {want['size']}"
        if ctx.verify != "off" and ctx.hash_file(p) != want["sha256"]:
            return f"{rel} differs from the manifest (sha256)"
    return None


def build_dir_prefix(key: str) -> str:
    return f"{BUILD_PREFIX}{key[:12]}-p{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_builds(artifacts_dir: Path) -> list[Path]:
    """Remove temporary build directories whose building process no longer exists."""
    removed: list[Path] = []
    for d in Path(artifacts_dir).glob(BUILD_PREFIX + "*"):
        parts = d.name[len(BUILD_PREFIX):].split("-")
        pid = next((int(x[1:]) for x in parts if x.startswith("p") and x[1:].isdigit()), None)
        if pid is None or not _pid_alive(pid):  # no pid: written by an older version, never in use now
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def quarantine(root: Path) -> None:
    """Move a corrupted artifact out of the way (then delete it), so a rebuild can take its name."""
    root = Path(root)
    trash = root.with_name(f"{BUILD_PREFIX}corrupt-{root.name}-p{os.getpid()}")
    try:
        os.replace(root, trash)
    except OSError:
        shutil.rmtree(root, ignore_errors=True)
        return
    shutil.rmtree(trash, ignore_errors=True)
