"""scripts/run_parts.py: parts run in order (sweep, archive, prune), an archived part is only pruned, a failure
stops the chain with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    return load_script("run_parts")


def _chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: tuple[str, str] | None,
           *extra: str) -> tuple[list[list[str]], str | None]:
    mod = _script()
    cfgs = []
    for name in ("part-a", "part-b", "part-c"):
        cfgs.append(tmp_path / f"{name}.yaml")
        cfgs[-1].write_text(f"name: {name}\ngeneration: {{seed: 0}}\n")
    archive = tmp_path / "parts"
    (archive / "part-a").mkdir(parents=True, exist_ok=True)
    (archive / "part-a" / "sweep.json").write_text("{}")  # already archived
    calls: list[list[str]] = []

    def run(cmd: list[str], **kw: Any) -> SimpleNamespace:
        calls.append(cmd)
        bad = fail is not None and Path(cmd[1]).name == fail[0] and fail[1] in " ".join(cmd)
        return SimpleNamespace(returncode=3 if bad else 0)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(sys, "argv", ["run_parts.py", *map(str, cfgs), "--out-root", str(tmp_path / "out"),
                                      "--archive", str(archive), *extra])
    try:
        mod.main()
    except SystemExit as e:
        return calls, str(e)
    return calls, None


def test_order_skip_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    py, out, parts = sys.executable, tmp_path / "out", tmp_path / "parts"
    sweep, arch, prune = (str(ROOT / d / f) for d, f in (("benchmarks", "sweep.py"), ("scripts", "archive_part.py"),
                                                          ("scripts", "prune_part.py")))
    calls, err = _chain(tmp_path, monkeypatch, ("archive_part.py", "part-c"))
    assert err is not None and "archive failed (exit 3)" in err and "\n" not in err
    assert calls == [
        [py, prune, str(tmp_path / "part-a.yaml"), "--delete"],  # archived: only pruned
        [py, sweep, str(tmp_path / "part-b.yaml"), "--out", str(out / "part-b")],
        [py, arch, str(out / "part-b"), str(parts)],
        [py, prune, str(tmp_path / "part-b.yaml"), "--delete"],
        [py, sweep, str(tmp_path / "part-c.yaml"), "--out", str(out / "part-c")],
        [py, arch, str(out / "part-c"), str(parts)],  # fails: part-c is never pruned
    ]
    assert (out / "part-b.bench.txt").is_file()


def test_a_failed_sweep_stops_before_its_archive_and_no_prune_prunes_nothing(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls, err = _chain(tmp_path, monkeypatch, ("sweep.py", "part-b"), "--no-prune")
    assert err is not None and "sweep (first run, then re-run) failed" in err
    assert [Path(c[1]).name for c in calls] == ["sweep.py"]


def test_a_bad_config_is_one_line_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _script()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    for argv in ([str(bad)], [str(tmp_path / "nowhere.yaml")]):
        monkeypatch.setattr(sys, "argv", ["run_parts.py", *argv, "--out-root", str(tmp_path / "out")])
        with pytest.raises(SystemExit) as e:
            mod.main()
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
