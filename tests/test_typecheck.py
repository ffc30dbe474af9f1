"""mypy on the typed core: the records, the statistics, the runner, the store, expectations, experiments and
the report (which reads the records by attribute).

The records exist so that a misspelt field is a type error, not a ``None`` from ``.get``; this test is
what makes that true. Settings are in pyproject.toml ``[tool.mypy]`` (third-party imports not followed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is in the dev extra (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "safetydrift"
TYPED = ["records.py", "rowjson.py", "stats", "runner.py", "store.py", "expectations.py", "validation.py", "experiments", "report"]


def _mypy(*paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         "--cache-dir", "/dev/null" if sys.platform != "win32" else "nul", *map(str, paths)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )


def test_typed_core_passes_mypy() -> None:
    r = _mypy(*(SRC / p for p in TYPED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_a_misspelt_record_field(tmp_path: Path) -> None:
    """The check is live: reading a field a record does not have fails (so the test above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from safetydrift.records import Comparison\n\n"
        "def f(c: Comparison) -> float:\n"
        "    return c.p_holms\n"
    )
    r = _mypy(bad, cwd=ROOT)
    assert r.returncode == 1 and 'has no attribute "p_holms"' in r.stdout, r.stdout + r.stderr
    bad.write_text(bad.read_text().replace("p_holms", "p_holm or 0.0"))
    assert _mypy(bad, cwd=ROOT).returncode == 0
