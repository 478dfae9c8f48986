"""Three ``reason serve`` processes behind one ``reason eval --engine openai --base-url a,b,c``: one
server killed mid-run, the eval still completes every problem, with records equal to a run against a
single healthy server (routing and failover change where work runs, not what is generated)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve_process import free_port, spawn_server, stop_server, wait_ready

pytestmark = pytest.mark.slow
REASON = [sys.executable, "-m", "reason"]
VOLATILE = ("wall_seconds", "seconds", "time", "started", "finished", "elapsed")


def eval_cmd(urls: list[str], out: Path) -> list[str]:
    return [*REASON, "eval", "--suite", "arith:3", "--limit", "16", "--budget", "4", "--batch-size", "8",
            "--engine", "openai", "--base-url", ",".join(urls), "--out", str(out)]


def stable(obj):
    """A record without its timings."""
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if not any(w in k for w in VOLATILE)}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def records(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["id"]: stable(row) for row in rows}


def test_killing_one_of_three_servers_loses_no_record(tmp_path):
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [spawn_server(p, env=env) for p in ports]
    try:
        for proc, port in zip(procs, ports):
            wait_ready(proc, port)
        urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
        reference = tmp_path / "one.jsonl"
        done = subprocess.run(eval_cmd(urls[:1], reference), capture_output=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr.decode()

        out = tmp_path / "three.jsonl"
        run = subprocess.Popen(eval_cmd(urls, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None and (
                not out.exists() or len(out.read_text().splitlines()) < 2):
            time.sleep(0.05)
        assert run.poll() is None, "the eval ended before the kill"
        assert httpx.get(urls[1] + "/ledger", timeout=10).json()["requests"] > 0  # it held some of the trees
        procs[1].send_signal(signal.SIGKILL)  # mid-run: records are still being written
        procs[1].wait()
        printed, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()
        assert "Traceback" not in err.decode()
        # The summary's per-server table: the killed server is marked down, the others served.
        table = [line for line in printed.decode().splitlines() if any(u in line for u in urls)]
        assert len(table) == 3, printed.decode()
        assert "no" in table[1].split() and all("yes" in row.split() for row in (table[0], table[2]))
        got = records(out)
        assert len(out.read_text().splitlines()) == len(got) == 16
        assert got == records(reference)
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_server(proc)
