"""scripts/run_parts.py: parts run in order (sweep, archive, prune), an archived part is skipped, a failure stops
the chain with one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_parts", ROOT / "scripts" / "run_parts.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_order_skip_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _script()
    cfgs = []
    for name in ("part-a", "part-b", "part-c"):
        cfgs.append(tmp_path / f"{name}.yaml")
        cfgs[-1].write_text(f"name: {name}\n")
    archive = tmp_path / "parts"
    (archive / "part-a").mkdir(parents=True)
    (archive / "part-a" / "sweep.json").write_text("{}")  # already archived: skipped
    calls: list[list[str]] = []

    def run(cmd: list[str], **kw: Any) -> SimpleNamespace:
        calls.append(cmd)
        fails = "part-c" in " ".join(cmd) and cmd[1].endswith("archive_part.py")
        return SimpleNamespace(returncode=3 if fails else 0)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["run_parts.py", *map(str, cfgs), "--out-root", str(tmp_path / "out"),
                                      "--archive", str(archive)])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert "archive failed (exit 3)" in str(e.value) and "\n" not in str(e.value)
    steps = [(Path(c[1]).name, Path(c[2]).stem if c[1].endswith(".py") else "") for c in calls]
    assert steps == [("sweep.py", "part-b"), ("archive_part.py", "part-b"), ("prune_part.py", "part-b"),
                     ("sweep.py", "part-c"), ("archive_part.py", "part-c")]  # part-c's prune never runs
    assert (tmp_path / "out" / "part-b.bench.txt").is_file()
