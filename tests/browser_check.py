"""Open an experiment report in headless Chromium: screenshot, console errors, and DOM sanity checks.

Not collected by pytest (the file name does not start with test_). Usage:

    python tests/browser_check.py [REPORT.html] [--screenshot OUT.png] [--interact] [--chromium /usr/bin/chromium]

Without REPORT a synthetic report (hostile strings included) is rendered into a temporary directory.
--interact also runs a copy of the report with an extra (nonce-carrying) script that changes the explorer's
select boxes and counts the rows, plus a script without the nonce that the Content-Security-Policy must block.
Needs Chromium (`apt-get install -y chromium`). Exit status 0 = page loaded, script ran, no console errors,
no injected element in the DOM; 1 = a check failed; 2 = Chromium missing or timed out.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]
# Console messages Chromium prints with --enable-logging=stderr --v=0 look like
# `[pid:tid:time:INFO:CONSOLE:12] "Uncaught ReferenceError: ...", source: file:///... (12)` whatever their
# level (console.error is also INFO), and the report itself never logs, so every console line is a problem:
# uncaught exceptions, console.* calls, CSP violations ("Refused to ...").
ERROR_PATTERNS = re.compile(r":CONSOLE[:(]\d+|Uncaught|Refused to|Failed to load", re.I)


def _chromium(explicit: str | None) -> str | None:
    for c in [explicit, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
              shutil.which("google-chrome")]:
        if c and Path(c).exists():
            return c
    return None


def _run(chrome: str, extra: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="sd-chrome-") as profile:
        cmd = [chrome, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check(report: Path, screenshot: Path, chrome: str, timeout: float = 180, height: int = 3000) -> list[str]:
    url = report.resolve().as_uri()
    problems: list[str] = []
    dom_run = _run(chrome, ["--virtual-time-budget=10000", "--dump-dom"], url, timeout)
    dom = dom_run.stdout
    html = report.read_text(encoding="utf-8")
    if "<body" not in dom:
        problems.append(f"no DOM dumped (exit {dom_run.returncode}): {dom_run.stderr[-500:]}")
    if 'id="sd-data"' in html and 'data-sd-ready="1"' not in dom:
        problems.append("explorer script did not finish (body[data-sd-ready] missing)")
    if re.search(r"<img[^>]*\bsrc=\"x\"", dom) or re.search(r"<img[^>]*onerror", dom, re.I):
        problems.append("an injected <img> element exists in the DOM")
    if 'id="sd-data"' in html:
        rows = len(re.findall(r"<tr>", dom.split('id="explorer-body"', 1)[-1].split("</tbody>", 1)[0]))
        pairs = len(re.findall(r"<tr>", dom.split('id="pair-body"', 1)[-1].split("</tbody>", 1)[0]))
        print(f"explorer rows rendered: {rows}; side-by-side rows: {pairs}")
        if rows == 0:
            problems.append("explorer table is empty")
    shot_run = _run(chrome, [f"--screenshot={screenshot}", f"--window-size=1400,{height}",
                             "--virtual-time-budget=10000"], url, timeout)
    if not screenshot.exists() or screenshot.stat().st_size == 0:
        problems.append(f"no screenshot written (exit {shot_run.returncode})")
    console = [ln for ln in (dom_run.stderr + shot_run.stderr).splitlines() if ERROR_PATTERNS.search(ln)]
    for ln in console:
        problems.append(f"console: {ln.strip()[:300]}")
    return problems


# Drives the explorer like a user (select boxes + change events) and reports row counts in #sd-interact.
_INTERACT_JS = """
(() => {
  const $ = (id) => document.getElementById(id);
  const rows = (id) => $(id).querySelectorAll("tr").length;
  const set = (id, v) => { const e = $(id); if (e.type === "checkbox") e.checked = v; else e.value = v;
                           e.dispatchEvent(new Event("change")); };
  const out = {all: rows("explorer-body")};
  set("f-verdict", "success"); out.success = rows("explorer-body");
  set("f-verdict", ""); set("f-variant", D_B); out.variant_b = rows("explorer-body");
  set("f-variant", ""); set("f-judge", D_J); set("f-verdict", "unscorable"); out.unscorable = rows("explorer-body");
  set("f-judge", ""); set("f-verdict", "");
  out.pairs = rows("pair-body"); set("p-diff", true); out.pairs_differ = rows("pair-body");
  out.head_b = $("p-head-b").textContent;
  const pre = document.createElement("pre"); pre.id = "sd-interact"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


def interact(report: Path, chrome: str, timeout: float = 180) -> tuple[dict | None, list[str]]:
    """Exercise the filters in a copy of the report; also check that CSP blocks a script without the nonce."""
    import json

    html = report.read_text(encoding="utf-8")
    m = re.search(r"script-src 'nonce-([^']+)'", html)
    island = re.search(r'<script type="application/json" id="sd-data">(.*?)</script>', html, re.S)
    if not m or not island:
        return None, ["no CSP nonce or no explorer data in the report"]
    data = json.loads(island.group(1))
    b = data["pair"]["b"]
    js = _INTERACT_JS.replace("D_B", json.dumps(b)).replace("D_J", json.dumps(data["judges"][0] if data["judges"] else ""))
    extra = (f'<script nonce="{m.group(1)}">{js}</script>'
             '<script>document.body.dataset.pwned = "1";</script>')  # no nonce: CSP must refuse it
    with tempfile.TemporaryDirectory(prefix="sd-interact-") as d:
        copy = Path(d) / "report.html"
        copy.write_text(html.replace("</body>", extra + "</body>"), encoding="utf-8")
        run = _run(chrome, ["--virtual-time-budget=10000", "--dump-dom"], copy.resolve().as_uri(), timeout)
    problems = []
    if 'data-pwned="1"' in run.stdout:
        problems.append("a script without the nonce ran: CSP is not effective")
    csp = re.compile(r"Refused to execute inline script|Executing inline script violates")  # Chromium wordings
    if not csp.search(run.stderr):
        problems.append("no CSP refusal logged for the script without the nonce")
    others = [ln for ln in run.stderr.splitlines() if ERROR_PATTERNS.search(ln) and not csp.search(ln)]
    problems += [f"console (interact): {ln.strip()[:300]}" for ln in others]
    got = re.search(r'<pre id="sd-interact">(.*?)</pre>', run.stdout, re.S)
    if not got:
        return None, [*problems, "interaction script produced no result"]
    import html as _html

    result = json.loads(_html.unescape(got.group(1)))
    if result.get("head_b") != f"B: {b}":
        problems.append(f"side-by-side header is {result.get('head_b')!r}")
    return result, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", nargs="?", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--chromium", default=None)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--interact", action="store_true", help="also drive the filters and test the CSP")
    ap.add_argument("--height", type=int, default=3000, help="window height of the screenshot (width 1400)")
    args = ap.parse_args(argv)
    chrome = _chromium(args.chromium)
    if chrome is None:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    report = args.report
    if report is None:
        import importlib.util

        from safetydrift.report.experiment_report import render_experiment_report

        spec = importlib.util.spec_from_file_location(
            "test_experiment_report", Path(__file__).resolve().parent / "test_experiment_report.py")
        assert spec is not None and spec.loader is not None
        helpers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(helpers)
        make_experiment = helpers.make_experiment

        out = Path(tempfile.mkdtemp(prefix="sd-report-"))
        exp, records = make_experiment(out)
        report = render_experiment_report(exp, records, out)
        print(f"synthetic report: {report}")
    screenshot = args.screenshot or report.with_name("screenshot.png")
    try:
        problems = check(report, screenshot, chrome, args.timeout, args.height)
        if args.interact:
            result, more = interact(report, chrome, args.timeout)
            print(f"interaction: {result}")
            problems += more
    except subprocess.TimeoutExpired:
        print("chromium timed out", file=sys.stderr)
        return 2
    print(f"screenshot: {screenshot}")
    for p in problems:
        print(f"PROBLEM: {p}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
