"""Many policy servers: tree-affine routing versus round-robin, and a server killed mid-run.

Starts ``--servers`` ``reason serve`` processes (bundled arith model, CPU, one torch thread each) on
loopback, then runs ``--clients`` searches at once (``--strategy``, particle filtering by default,
with the arith PRM at ``--budget``, one arith problem each) through one ``openai`` engine over every
server, as ``reason eval --batch-size`` does; with ``--separate`` each search is a client of its own
(its own engine and router, in its own thread). Three phases, each on freshly started servers:

1. tree-affine routing (the default);
2. round-robin routing, the same searches;
3. tree-affine routing, killing one server (SIGKILL) once a third of the requests are answered.

For each phase: wall time, prompt tokens sent and the share the servers found cached (from the
clients' per-server stats and from each server's ``/v1/ledger``), requests per server, searches
completed, and whether each search's tree equals phase 1's (same seeds: routing and failover must
not change what is generated).

Run: ``nice -n 19 python benchmarks/serve_routing.py [--servers 3 --clients 32 --budget 8]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from reason.core.engine.openai import OpenAIEngine
from reason.shortcuts import solve, solve_many
from rewards.catalog import load_prm
from tasks.arith.problems import generate
from tasks.registry import resolve_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_servers(n: int) -> tuple[list[subprocess.Popen], list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ports = [free_port() for _ in range(n)]
    procs = [subprocess.Popen([sys.executable, "-m", "reason", "serve", "--port", str(p), "--dtype", "float32",
                               "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
             for p in ports]
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    deadline = time.monotonic() + 180
    for url in urls:
        while True:
            try:
                if httpx.get(url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("servers did not start")
            time.sleep(0.2)
    return procs, urls


def stop_servers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def snapshot(result: Any) -> list[tuple]:
    return [(n.id, n.parent.id if n.parent else None, tuple(n.token_ids)) for n in result.tree]


def phase(label: str, args: argparse.Namespace, routing: str, kill: bool, reference: list | None) -> list:
    procs, urls = start_servers(args.servers)
    tokenizer_engine = OpenAIEngine.from_pretrained(resolve_model("arith"), base_url=",".join(urls))
    tokenizer = tokenizer_engine.tokenizer
    tokenizer_engine.close()
    questions = [p.question for p in generate(3, args.clients, seed=21)]
    prm = load_prm("arith")
    options = {"strategy": args.strategy, "budget": args.budget, "prm": prm}
    n_clients = len(questions) if args.separate else 1
    clients = [OpenAIEngine(urls, tokenizer, routing=routing, max_concurrency=64, timeout=60, retries=3, backoff=0.2)
               for _ in range(n_clients)]
    results: list[Any] = [None] * len(questions)
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            if args.separate:
                results[i] = solve(clients[i], questions[i], seed=i, **options)
            else:  # one client, every search at once (as reason eval --batch-size does)
                results[:] = solve_many(clients[0], questions, seed=0, **options)
        except Exception as exc:  # noqa: BLE001 -- counted and printed
            errors.append(f"{i}: {exc}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    killed = None
    if kill:
        total = None
        while any(t.is_alive() for t in threads):
            answered = sum(s["requests"] for c in clients for s in c.server_stats())
            if total is None and answered >= args.kill_after:
                killed = 1
                procs[killed].send_signal(signal.SIGKILL)
                total = answered
                print(f"  killed server {killed} ({urls[killed]}) after {answered} answered requests", flush=True)
            time.sleep(0.05)
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    sent = cached = 0
    per_server = [{"requests": 0, "prompt": 0, "cached": 0, "trees_moved_in": 0} for _ in urls]
    for c in clients:
        for j, s in enumerate(c.server_stats()):
            per_server[j]["requests"] += s["requests"]
            per_server[j]["prompt"] += s["prompt_tokens"]
            per_server[j]["cached"] += s["cached_prompt_tokens"]
            per_server[j]["trees_moved_in"] += s["trees_moved_in"]
            sent += s["prompt_tokens"]
            cached += s["cached_prompt_tokens"]
    ledgers = []
    for j, url in enumerate(urls):
        if j == killed:
            ledgers.append(None)
            continue
        ledgers.append(httpx.get(url + "/ledger", timeout=10).json())
    stop_servers(procs)
    for c in clients:
        c.close()
    done = sum(r is not None for r in results)
    same = sum(1 for i, r in enumerate(results) if r is not None and reference is not None
               and reference[i] is not None and snapshot(r) == reference[i])
    print(f"{label}: {done}/{len(questions)} searches completed in {wall:.1f} s; prompt tokens sent {sent:,}, "
          f"found cached {cached:,} ({cached / max(sent, 1):.1%})"
          + (f"; trees equal to phase 1: {same}/{len(questions)}" if reference is not None else ""), flush=True)
    for j, (s, led) in enumerate(zip(per_server, ledgers)):
        srv = ("killed" if led is None else
               f"server ledger: {led['requests']} requests, {led['prompt_tokens_reused']:,}/"
               f"{led['prompt_tokens_received']:,} prompt tokens reused")
        print(f"  server {j}: {s['requests']} requests answered, {s['cached']:,}/{s['prompt']:,} prompt tokens cached "
              f"({s['cached'] / max(s['prompt'], 1):.1%}), trees moved in {s['trees_moved_in']}; {srv}", flush=True)
    for e in errors[:5]:
        print("  error:", e)
    return [snapshot(r) if r is not None else None for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--strategy", default="particle")
    parser.add_argument("--separate", action="store_true",
                        help="each search its own client (own engine and router) instead of one client for all")
    parser.add_argument("--kill-after", type=int, default=100, help="answered requests before the kill (phase 3)")
    parser.add_argument("--phases", default="1,2,3")
    args = parser.parse_args()
    phases = {int(x) for x in args.phases.split(",")}
    reference = phase("1. tree-affine", args, "tree", False, None) if 1 in phases else None
    if 2 in phases:
        phase("2. round-robin", args, "round_robin", False, reference)
    if 3 in phases:
        phase("3. tree-affine, one server killed", args, "tree", True, reference)


if __name__ == "__main__":
    main()
