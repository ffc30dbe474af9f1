"""The ecosystem path: NVIDIA garak's OpenAI-compatible generator scans a model served by ``safetydrift
serve``. garak 0.17 is installed by scripts/setup.sh (without its provider SDKs); everything stays on
127.0.0.1, one cheap probe (6 prompts), one generation each, an API key on the way."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = "lmrc.Anthropomorphisation"  # 6 short prompts, a string detector: no model downloads
API_KEY = "sk-garak-test"


@pytest.fixture
def served(tmp_path: Path, cache_dir: Path):
    """``safetydrift serve tiny-random`` on a free loopback port: (base url, the server's log lines)."""
    env = {**os.environ, "SAFETYDRIFT_CACHE": str(cache_dir), "SAFETYDRIFT_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "safetydrift", "serve", "tiny-random", "--port", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    url: list[str] = []
    announced = threading.Event()

    def read() -> None:  # keeps the pipe drained for as long as the server runs
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if m := re.search(r"at (http://127\.0\.0\.1:\d+/v1) ", line):
                url.append(m.group(1))
                announced.set()
        announced.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert announced.wait(120) and url, "the server did not start:\n" + "\n".join(lines)
        yield url[0], lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)


def test_garak_scans_a_served_model(served: tuple[str, list[str]], tmp_path: Path) -> None:
    if importlib.util.find_spec("garak") is None:
        if os.environ.get("CI"):
            pytest.fail("garak is not installed: scripts/setup.sh installs it")
        pytest.skip("garak is not installed (bash scripts/setup.sh)")
    url, log = served
    options = {"openai": {"OpenAICompatible": {"uri": url, "max_tokens": 16}}}
    env = {**os.environ, "OPENAICOMPATIBLE_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1",
           # garak writes its log, plugin cache and reports under the XDG directories: keep them here
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "garak", "--target_type", "openai.OpenAICompatible", "--target_name", "tiny-random",
         "--generator_options", json.dumps(options), "--spec", f"probes.{PROBE}", "--generations", "1",
         "--report_prefix", str(tmp_path / "scan")],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "garak run complete" in run.stdout
    assert time.monotonic() - t0 < 120

    records = [json.loads(line) for line in (tmp_path / "scan.report.jsonl").read_text().splitlines()]
    attempts = [r for r in records if r["entry_type"] == "attempt" and r["status"] == 2]  # 2: evaluated
    assert len(attempts) == 6
    assert all(a["outputs"] and isinstance(a["outputs"][0]["text"], str) for a in attempts)  # answers, not None
    (evaluation,) = [r for r in records if r["entry_type"] == "eval"]
    assert evaluation["probe"] == PROBE and evaluation["total_evaluated"] == 6

    served_ok = [line for line in log if '"POST /v1/chat/completions HTTP/1.1" 200' in line]
    assert len(served_ok) == 6, "\n".join(log)
    # every chat request carried garak's key and was answered (its reachability probe, GET /v1, is not)
    assert not [line for line in log if '"POST ' in line and '" 200 ' not in line]
