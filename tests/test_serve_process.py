"""``reason serve`` as its own process: killed mid-run, clients fail clearly and ``reason eval``
resumes after a restart without losing finished records."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
REASON = [sys.executable, "-m", "reason"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([*REASON, "serve", "--port", str(port), "--dtype", "float32",
                             "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def eval_cmd(port: int, out: Path) -> list[str]:
    return [*REASON, "eval", "--suite", "arith:3", "--limit", "24", "--budget", "4",
            "--batch-size", "4", "--engine", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--out", str(out)]


def test_kill_server_mid_eval_then_resume(tmp_path):
    port = free_port()
    out = tmp_path / "run.jsonl"
    server = start_server(port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(eval_cmd(port, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None and (
                not out.exists() or len(out.read_text().splitlines()) < 4):
            time.sleep(0.1)
        assert out.exists(), "no record was written before the kill"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    _, err = run.communicate(timeout=300)
    assert run.returncode != 0
    text = err.decode()
    assert "Traceback" not in text, text
    assert any("base_url:" in line and "failed after" in line for line in text.splitlines()), text
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert 4 <= len(kept) < 24

    server = start_server(port)
    try:
        done = subprocess.run(eval_cmd(port, out), capture_output=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr.decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24
    assert ids[: len(kept)] == kept  # finished records were kept, not rewritten
