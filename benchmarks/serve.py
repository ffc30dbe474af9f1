"""``safetydrift serve`` under load: throughput and latency at 1, 10 and 100 concurrent clients.

    python benchmarks/serve.py [--model tiny-random] [--requests 200] [--tokens 16] [--clients 1,10,100]
                               [--batch-window-ms 0,20]

Starts the real CLI (``safetydrift serve MODEL --port 0``) on loopback once per server setting, then for
each client count runs ``--requests`` chat completions (greedy, ``--tokens`` new tokens, advbench50
prompts) from that many threads, each with its own keep-alive connection. Every loop is bounded by the
request count and by ``--deadline`` seconds per row, and the server is stopped at the end, so the script
always finishes by itself. Prints a table: server setting, clients, requests, failures (any status but
200, any connection error), seconds, requests/s, p50 and p99 latency; and the machine's load average.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def start_server(model: str, window_ms: float, cache: str | None) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache:
        env["SAFETYDRIFT_CACHE"] = cache
    cmd = [sys.executable, "-m", "safetydrift", "--quiet", "serve", model, "--port", "0",
           "--batch-window-ms", str(window_ms), "--max-batch", "16"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if m := re.search(r"at http://127\.0\.0\.1:(\d+)/v1", line):
            return proc, int(m.group(1))
    proc.kill()
    raise SystemExit(f"the server did not start: {' '.join(cmd)}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_level(port: int, clients: int, requests: int, prompts: list[str], tokens: int,
              deadline_s: float) -> tuple[list[float], int, float]:
    """(latencies of the successful requests, failures, wall seconds) for ``requests`` over ``clients``."""
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline_s)
        barrier.wait()
        for k in range(per_client[i]):
            if time.monotonic() > stop_at:
                with lock:
                    failures[0] += per_client[i] - k
                break
            body = json.dumps({"model": "m", "max_tokens": tokens, "temperature": 0,
                               "messages": [{"role": "user", "content": prompts[(i + k) % len(prompts)]}]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline_s)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + 30)
    return latencies, failures[0], time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--requests", type=int, default=200, help="requests per row")
    ap.add_argument("--tokens", type=int, default=16, help="max_tokens per request")
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--batch-window-ms", default="0,20", help="server settings to compare, comma-separated")
    ap.add_argument("--deadline", type=float, default=180.0, help="seconds a row may take before it stops")
    ap.add_argument("--cache", default=None, help="artifact cache (default: the user's)")
    args = ap.parse_args()
    data = Path(__file__).resolve().parents[1] / "src/safetydrift/datasets/data/advbench_subset50.csv"
    prompts = [line.split(",", 1)[1].strip().strip('"') for line in data.read_text().splitlines()[1:] if "," in line]
    load0 = os.getloadavg()
    rows = []
    for window in (float(w) for w in args.batch_window_ms.split(",")):
        proc, port = start_server(args.model, window, args.cache)
        try:
            run_level(port, 1, 2, prompts, args.tokens, args.deadline)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                lat, failed, secs = run_level(port, clients, args.requests, prompts, args.tokens, args.deadline)
                setting = "one at a time" if window == 0 else f"micro-batch {window:g} ms, ≤16"
                rows.append((setting, clients, args.requests, failed, secs, len(lat) / secs,
                             percentile(lat, 50), percentile(lat, 99)))
        finally:
            stop_server(proc)
    load1 = os.getloadavg()
    t = Table(title=f"safetydrift serve {args.model}: {args.requests} requests per row, max_tokens {args.tokens}, greedy")
    for c in ("server", "clients", "requests", "failed", "seconds", "req/s", "p50 ms", "p99 ms"):
        t.add_column(c, justify="left" if c == "server" else "right")
    for s, c, n, f, secs, rps, p50, p99 in rows:
        t.add_row(s, str(c), str(n), str(f), f"{secs:.1f}", f"{rps:.1f}", f"{p50 * 1000:.0f}", f"{p99 * 1000:.0f}")
    console = Console(width=110)
    console.print(t)
    console.print(f"load average (1/5/15 min) before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
                  f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
