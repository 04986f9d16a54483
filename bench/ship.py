"""Shipping to ``codetape serve``: what it costs the agent, and how fast a push goes.

Run: ``.venv/bin/python bench/ship.py [--runs 200] [--steps 5] [--rounds 3] [--json]``

Each round, side by side in alternation:

- ``record``: a process records RUNS runs of STEPS observed steps (``@codetape.agent``
  and ``@codetape.code_action``, each step's code and output distinct, so its blobs are
  new) with no remote; the time is the recording loop's, measured in the process;
- ``record+ship``: the same with ``CODETAPE_REMOTE`` set: the background shipper sends
  while the agent records. The loop's time again (``record+ship / record`` is what
  shipping costs the agent), and the process's whole life, its exit's last flush
  included;
- ``push``: ``codetape push`` of the first store to a fresh server: spans/s and blobs/s
  (blobs are small: the spool's; a chunk's are asked for once, ``POST
  /v1/blobs/missing``, and sent in batches, ``POST /v1/blobs``; before those endpoints
  each was a ``HEAD`` and a ``PUT``), then a second push, which has nothing to send
  (its time is mostly the process's start).

To compare with the code before a change: ``git archive <commit> src bench | tar -x -C
/tmp/ct-before`` and run ``PYTHONPATH=/tmp/ct-before/src python
/tmp/ct-before/bench/ship.py --rounds 1`` in alternation with this one.

The load average (1 min) is printed with each round: the machine is shared, so compare
the ratios measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

TOKEN = "bench-token"
_CLI = "from codetape.cli import main; main()"
_RECORD = """
import sys, time
import codetape

@codetape.code_action
def execute(code, ns):
    exec(code, ns)

@codetape.agent(name="bench")
def solve(task, r, steps):
    ns = {}
    for i in range(steps):
        execute(f"x{i} = {r} * {i}\\nprint('run', {r}, 'step', {i}, x{i})", ns)
    return "done"

runs, steps = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
for r in range(runs):
    solve(f"task {r}", r, steps)
print(time.perf_counter() - start, flush=True)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "serve", "--home", str(home), "--port", str(port)],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            request = urllib.request.Request(
                url + "/healthz", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(request, timeout=5):
                return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("codetape serve did not start")


def _record(home: Path, runs: int, steps: int, remote: str | None) -> tuple[float, float]:
    env = {**os.environ, "CODETAPE_HOME": str(home), "CODETAPE_TOKEN": TOKEN}
    env.pop("CODETAPE_REMOTE", None)
    if remote:
        env["CODETAPE_REMOTE"] = remote
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _RECORD, str(runs), str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1]), time.perf_counter() - start


def _push(home: Path, url: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "--home", str(home), "push", "--remote", url, "--json"],
        env={**os.environ, "CODETAPE_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, json.loads(done.stdout)


def _round(root: Path, runs: int, steps: int) -> dict[str, Any]:
    process, url = _serve(root / "server")
    try:
        row: dict[str, Any] = {"load_before": os.getloadavg()[0]}
        row["record_s"], row["record_life_s"] = _record(root / "plain", runs, steps, None)
        row["ship_s"], row["ship_life_s"] = _record(root / "shipped", runs, steps, url)
        second, url2 = _serve(root / "server2")
        try:
            row["push_s"], stats = _push(root / "plain", url2)
            row["push_again_s"], again = _push(root / "plain", url2)
        finally:
            second.terminate()
            second.wait()
        row["spans"], row["blobs"] = stats["spans"], stats["blobs_sent"]
        row["spans_per_s"] = stats["spans"] / row["push_s"]
        row["blobs_per_s"] = stats["blobs_sent"] / row["push_s"]
        row["again_spans"] = again["spans"]
        row["load_after"] = os.getloadavg()[0]
        return row
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="codetape-bench-ship-"))
        try:
            rows.append(_round(root, args.runs, args.steps))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        row = rows[-1]
        if not args.json:
            print(
                f"load {row['load_before']:.1f}-{row['load_after']:.1f}: record "
                f"{row['record_s']:.2f} s, record+ship {row['ship_s']:.2f} s "
                f"({row['ship_s'] / row['record_s']:.2f}x; process {row['record_life_s']:.2f}"
                f" -> {row['ship_life_s']:.2f} s); push {row['spans']} spans + "
                f"{row['blobs']} blobs in {row['push_s']:.2f} s ({row['spans_per_s']:.0f} "
                f"spans/s, {row['blobs_per_s']:.0f} blobs/s), again {row['push_again_s']:.2f} s"
                f" ({row['again_spans']} spans)"
            )
    ratio = statistics.median(r["ship_s"] / r["record_s"] for r in rows)
    if args.json:
        print(json.dumps({"rounds": rows, "median_ship_ratio": ratio}, indent=2))
    else:
        print(f"median record+ship / record: {ratio:.2f}x")


if __name__ == "__main__":
    main()
