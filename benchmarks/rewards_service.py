"""Scores over HTTP against in process (issue 22, part 3): the arith value model and the arith PRM
served by ``/v1/rewards`` on a loopback server thread, and 16 concurrent clients on one batcher.

Run: ``python benchmarks/rewards_service.py`` (CPU; about a minute)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from reason.core.engine.hf import HFEngine
from reason.serve import create_app
from reason.serve.thread import ServerThread
from rewards.catalog import load_prm, load_value
from tasks.arith.problems import generate
from tasks.registry import resolve_model


def best(fn: Callable[[], Any], reps: int = 3) -> tuple[float, Any]:
    """The fastest of ``reps`` calls (seconds) and its result."""
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    prm, value = load_prm("arith"), load_value("arith")
    problems = generate(3, 64, seed=7)
    value_items = [(p.question, "\n".join(p.solution.splitlines()[:k])) for p in problems for k in (1, 2, 3, 4)]
    prm_items = [(p.question, p.solution.splitlines()) for p in problems]
    app = create_app(engine, model_name="arith", prms={"arith": prm}, values={"arith": value})
    with ServerThread(app) as srv:
        remote_prm, remote_value = load_prm(f"arith={srv.url}"), load_value(f"arith={srv.url}")
        remote_value.value_batch(value_items[:4])  # connection warm
        t_here, here = best(lambda: value.value_batch(value_items))
        t_there, there = best(lambda: remote_value.value_batch(value_items))
        diff = max(abs(a - b) for a, b in zip(here.values, there.values))
        print(f"value model, {len(value_items)} items in one call: in process {t_here * 1000:.0f} ms, "
              f"over HTTP {t_there * 1000:.0f} ms, max |difference| {diff:.1e}")
        t_here, here = best(lambda: prm.score_batch(prm_items))
        t_there, there = best(lambda: remote_prm.score_batch(prm_items))
        print(f"arith PRM, {len(prm_items)} items: in process {t_here * 1000:.1f} ms, over HTTP {t_there * 1000:.1f} ms, "
              f"equal: {here.scores == there.scores}")
        clients = [load_value(f"arith={srv.url}") for _ in range(16)]
        chunks = [value_items[16 * i:16 * (i + 1)] for i in range(16)]
        calls, jobs = app.state.rewards.calls, app.state.rewards.jobs
        threads = [threading.Thread(target=c.value_batch, args=(chunk,)) for c, chunk in zip(clients, chunks)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        print(f"16 concurrent clients x 16 value items: {wall * 1000:.0f} ms wall, "
              f"{app.state.rewards.jobs - jobs} requests served by {app.state.rewards.calls - calls} model calls")


if __name__ == "__main__":
    main()
