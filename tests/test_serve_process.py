"""``reason serve`` as its own process: killed mid-run, clients fail clearly and ``reason eval``
resumes after a restart without losing finished records; ``--api-key``, ``REASON_API_KEY`` and
``--max-tree-tokens`` reach the app through the real command line."""

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
from click.testing import CliRunner

from reason.cli import main

pytestmark = pytest.mark.slow
REASON = [sys.executable, "-m", "reason"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_server(port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``reason serve`` on 127.0.0.1:``port`` with the bundled arith model, not waited for."""
    return subprocess.Popen([*REASON, "serve", "--port", str(port), "--dtype", "float32", "--device", "cpu", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_ready(proc: subprocess.Popen, port: int) -> subprocess.Popen:
    """Wait (at most 120 s) until ``proc`` answers /health; kill it if it does not."""
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


def start_server(port: int) -> subprocess.Popen:
    return wait_ready(spawn_server(port), port)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        stop_server(server)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24
    assert ids[: len(kept)] == kept  # finished records were kept, not rewritten


@pytest.fixture(scope="module")
def keyed_servers():
    """Two ``reason serve`` processes, started together: one given ``--api-key flag-key
    --max-tree-tokens 64``, one given only ``REASON_API_KEY=env-key`` in its environment."""
    plain_env = {k: v for k, v in os.environ.items() if k != "REASON_API_KEY"}
    ports = {"flag": free_port(), "env": free_port()}
    procs = {"flag": spawn_server(ports["flag"], "--api-key", "flag-key", "--max-tree-tokens", "64", env=plain_env),
             "env": spawn_server(ports["env"], env={**plain_env, "REASON_API_KEY": "env-key"})}
    try:
        for name, proc in procs.items():
            wait_ready(proc, ports[name])
        yield {name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()}
    finally:
        for proc in procs.values():
            stop_server(proc)


def test_api_key_from_the_flag_and_from_the_environment(keyed_servers):
    for name, key, other in (("flag", "flag-key", "env-key"), ("env", "env-key", "flag-key")):
        url = keyed_servers[name]
        r = httpx.get(url + "/models")
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"], name
        assert httpx.get(url + "/models", headers={"Authorization": f"Bearer {other}"}).status_code == 401, name
        assert httpx.post(url + "/completions", json={"prompt": "1+2", "max_tokens": 4}).status_code == 401, name
        ok = httpx.get(url + "/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "arith", name
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # outside /v1: no key
    # the client side of the same variable: `reason generate --engine openai` sends REASON_API_KEY
    args = ["generate", "1+2", "--engine", "openai", "--base-url", keyed_servers["env"], "--json"]
    r = CliRunner().invoke(main, args, env={"REASON_API_KEY": "env-key"})
    assert r.exit_code == 0 and json.loads(r.output)["samples"], r.output
    r = CliRunner().invoke(main, args, env={"REASON_API_KEY": None})
    assert r.exit_code != 0 and "401" in r.output


def test_max_tree_tokens_bounds_the_served_trees(keyed_servers):
    """The same requests to a server capped at 64 tree tokens and to one with the default cap: the
    capped one holds at most 64 after each, the other keeps them all; both answer alike."""
    capped = (keyed_servers["flag"], {"Authorization": "Bearer flag-key"})
    default = (keyed_servers["env"], {"Authorization": "Bearer env-key"})
    before = httpx.get(default[0] + "/ledger", headers=default[1]).json()
    served = 0
    for i in range(4):  # distinct prompts: a new tree each, 30 generated tokens on it
        body = {"prompt": f"{i + 10}*{i + 3}+7", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
        answers = []
        for url, headers in (capped, default):
            r = httpx.post(url + "/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        assert answers[0]["choices"] == answers[1]["choices"]
        served += answers[0]["usage"]["total_tokens"]
        held = httpx.get(capped[0] + "/ledger", headers=capped[1]).json()
        assert 0 < held["tree_tokens"] <= 64 and held["trees"] >= 1
    assert served > 2 * 64
    kept = httpx.get(default[0] + "/ledger", headers=default[1]).json()
    assert kept["trees"] - before["trees"] == 4 and kept["tree_tokens"] - before["tree_tokens"] == served
