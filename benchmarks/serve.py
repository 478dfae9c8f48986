"""Serving under load: many clients each running a small search against one ``reason serve``.

Starts ``reason serve`` (bundled arith model, CPU) as its own process, then runs ``--clients``
searches (particle filtering with the arith PRM at ``--budget``, one arith problem each, each
client with its own ``openai`` engine): first one client at a time, then all at once from as many
threads. Prints both wall times and their throughput ratio (requests from concurrent clients share
the server's forwards), the requests sent versus answered in the server's ledger, whether every
search gave the same tree in both runs (nothing lost, duplicated or mixed up), prefix reuse, and
the server's resident memory after each phase.

Run: ``python benchmarks/serve.py [--clients 32 --budget 8]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from reason.core.engine.openai import OpenAIEngine
from tasks.registry import resolve_model
from rewards.catalog import load_prm
from reason.shortcuts import solve_many
from tasks.arith.problems import generate


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--budget", type=int, default=8)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "reason", "serve", "--port", str(port), "--dtype", "float32",
                               "--device", "cpu"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            try:
                httpx.get(url.removesuffix("/v1") + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        path = resolve_model("arith")
        prm = load_prm("arith")
        questions = [p.question for p in generate(3, args.clients, seed=23)]
        sent = [0]
        lock = threading.Lock()

        def search(i: int) -> list:
            client = OpenAIEngine.from_pretrained(path, base_url=url)
            result = solve_many(client, [questions[i]], strategy="particle", budget=args.budget, seed=i, prm=prm)[0]
            with lock:
                sent[0] += client.requests
            return [(n.id, tuple(n.token_ids)) for n in result.tree]

        search(0)  # warm the server up
        base = httpx.get(url + "/ledger").json()
        sent[0] = 0
        start = time.perf_counter()
        one_by_one = [search(i) for i in range(args.clients)]
        wall_seq = time.perf_counter() - start
        mem_seq = rss_mb(server.pid)
        mid = httpx.get(url + "/ledger").json()

        together: dict[int, list] = {}
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                together[i] = search(i)
            except BaseException as exc:  # noqa: BLE001 -- counted below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        cpu_server, cpu_client = cpu_seconds(server.pid), resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall_conc = time.perf_counter() - start
        cpu_server = cpu_seconds(server.pid) - cpu_server
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_client = usage.ru_utime + usage.ru_stime - cpu_client.ru_utime - cpu_client.ru_stime
        mem_conc = rss_mb(server.pid)
        led = httpx.get(url + "/ledger").json()
        answered = led["completed"] - base["completed"]
        same = sum(together.get(i) == one_by_one[i] for i in range(args.clients))
        reuse = led["prompt_tokens_reused"] / max(1, led["prompt_tokens_received"])
        print(f"### serve: {args.clients} clients, particle filtering at budget {args.budget} on one arith problem "
              f"each, one `reason serve` process (CPU)\n")
        fwd = [mid["engine"]["forward_passes"] - base["engine"]["forward_passes"],
               led["engine"]["forward_passes"] - mid["engine"]["forward_passes"]]
        print("| run | wall s | searches / s | server forwards | server RSS MB |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| one client at a time | {wall_seq:.1f} | {args.clients / wall_seq:.2f} | {fwd[0]} | {mem_seq:.0f} |")
        print(f"| {args.clients} clients at once | {wall_conc:.1f} | {args.clients / wall_conc:.2f} | {fwd[1]} | "
              f"{mem_conc:.0f} |")
        print(f"\nthroughput ratio {wall_seq / wall_conc:.2f}x; errors {len(errors)}; requests sent {sent[0]}, "
              f"answered {answered}; same tree in both runs {same}/{args.clients}; prompt tokens found cached "
              f"{reuse:.1%}; CPU seconds while all ran at once: server {cpu_server:.1f}, clients {cpu_client:.1f} "
              f"({os.cpu_count()} cores)")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
