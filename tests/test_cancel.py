"""Cancelled work stops: in the engine (no more tokens, KV freed, other requests unchanged), through
the worker (a cancelled future, an aborted search view), and over HTTP (a client that disconnects
stops its generation within about one engine step; a small request meanwhile answers quickly)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from reason.core.context import Runner
from reason.core.engine.base import Engine, ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.nocache import NoPrefixCacheEngine
from reason.core.errors import ReasonError
from reason.serve import create_app
from reason.serve.thread import ServerThread
from reason.serve.worker import EngineWorker, WorkerEngine

LONG = Stop(eos=False, max_tokens=200)  # runs to its cap: nothing but cancel ends it early
SHORT = Stop(max_tokens=8)
GREEDY = Sampling(temperature=0)
SETTLE_S = 2.0  # time for the engine step in flight at the disconnect to end (slow on a loaded CPU)


def short_request(engine: Engine) -> ExpandRequest:
    tree = engine.new_tree("Compute: 3+4*2=")
    return ExpandRequest(tree, tree.root, 2, SHORT, Sampling(temperature=1.0, seed=5))


def job_of(engine: HFEngine, ticket: int):
    return next((j for j in engine.scheduler.waiting + engine.scheduler.running if j.ticket == ticket), None)


@pytest.fixture(params=["cached", "drafted", "no_prefix_cache"])
def hf(request, engine) -> HFEngine:
    """The arith policy under each scheduling variant (the module's model, fresh caches)."""
    if request.param == "drafted":
        return HFEngine(engine.model, engine.tokenizer, draft="suffix")
    if request.param == "no_prefix_cache":
        return NoPrefixCacheEngine(engine.model, engine.tokenizer)
    return HFEngine(engine.model, engine.tokenizer)


def test_cancel_stops_tokens_frees_kv_and_leaves_others_alone(hf):
    alone = short_request(hf)
    [reference] = hf.expand_many([alone])
    reference_tokens = [c.token_ids for c in reference]

    long_tree = hf.new_tree("Compute: 12*7+5=")
    long_ticket = hf.submit(ExpandRequest(long_tree, long_tree.root, 16, LONG, Sampling(seed=3)))
    short = short_request(hf)
    short_ticket = hf.submit(short)
    outcomes = []
    for _ in range(3):
        outcomes += hf.step()
    assert long_tree.ledger.generated_tokens > 0
    job = job_of(hf, long_ticket)
    held = sum(len(s.slots) for s in job.seqs)
    assert held > 0
    free_before = hf.pool.n_free

    assert hf.cancel(long_ticket)
    assert hf.pool.n_free >= free_before + held  # its sequences' KV (and a private path's) went back at once
    assert job_of(hf, long_ticket) is None
    assert not hf.cancel(long_ticket)  # nothing left to stop
    spent = long_tree.ledger.generated_tokens
    engine_spent = hf.ledger.generated_tokens
    while hf.has_work():
        outcomes += hf.step()

    assert long_tree.ledger.generated_tokens == spent  # not one token more
    assert {o.ticket for o in outcomes} == {short_ticket}  # a cancelled request is never reported
    assert len(long_tree) == 1  # and makes no children
    [done] = outcomes
    assert done.error is None and [c.token_ids for c in done.children] == reference_tokens
    assert hf.ledger.generated_tokens - engine_spent <= sum(len(t) for t in reference_tokens)  # the short one's
    assert all(not s.slots for s in job.seqs)


def test_cancel_a_queued_request(engine):
    tree = engine.new_tree("Compute: 9*9=")
    ticket = engine.submit(ExpandRequest(tree, tree.root, 4, LONG, Sampling(seed=1)))
    before = engine.ledger.generated_tokens
    assert engine.cancel(ticket)
    assert not engine.has_work()
    assert engine.step() == []
    assert engine.ledger.generated_tokens == before
    assert not engine.cancel(12345)  # unknown ticket


def test_worker_cancel_stops_the_request_between_steps(engine):
    worker = EngineWorker(engine)
    try:
        tree = engine.new_tree("Compute: 8*6-5=")
        fut = worker.submit(ExpandRequest(tree, tree.root, 64, LONG, Sampling(seed=2)))
        deadline = time.monotonic() + 30
        while tree.ledger.generated_tokens == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tree.ledger.generated_tokens > 0
        worker.cancel(fut)
        assert fut.cancelled()
        small = short_request(engine)
        children = worker.submit(small).result(timeout=30)  # served after the cancel, between steps
        assert len(children) == 2
        spent = tree.ledger.generated_tokens
        time.sleep(0.3)
        assert tree.ledger.generated_tokens == spent
        assert worker.cancelled == 1 and not worker.call(engine.has_work).result(timeout=10)
        assert spent < 64 * 200
    finally:
        worker.close()


def test_aborting_a_search_view_ends_the_search_and_frees_its_trees(engine):
    """What ``/v1/solve`` does when its client goes: the search thread ends promptly with a
    cancelled error, no more tokens are made for it, and its trees' KV is released."""
    worker = EngineWorker(engine)
    view = WorkerEngine(worker)
    runner = Runner(view)
    trees = []
    box: dict[str, BaseException] = {}

    async def search(prompt: str) -> None:
        ctx = runner.context(prompt)
        trees.append(ctx.tree)
        node = ctx.tree.root
        while True:  # never ends by itself
            kids = await ctx.expand(node, 32, Stop(eos=False, segment_tokens=20), Sampling(seed=ctx.next_seed()))
            node = kids[0] if kids[0].finish_reason == "segment" else ctx.tree.root

    def run() -> None:
        try:
            runner.run([search("Compute: 1+2*3="), search("Compute: 7-2*2=")])
        except BaseException as exc:  # noqa: BLE001 -- inspected below
            box["error"] = exc

    try:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while sum(t.ledger.generated_tokens for t in trees) < 500 and time.monotonic() < deadline:
            time.sleep(0.01)
        view.abort()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert isinstance(box.get("error"), ReasonError) and box["error"].field == "request"
        with pytest.raises(ReasonError, match="cancelled"):
            view.submit(ExpandRequest(trees[0], trees[0].root, 1, SHORT, GREEDY))
        worker.call(lambda: None).result(timeout=10)  # the cancels and releases are done
        spent = engine.ledger.generated_tokens
        time.sleep(0.3)
        assert engine.ledger.generated_tokens == spent
        assert not worker.call(engine.has_work).result(timeout=10)
        held = worker.call(lambda: [engine.store.peek(n) for t in trees for n in t]).result(timeout=10)
        assert all(e is None or not e.slots for e in held)  # no KV of the aborted trees stays cached
    finally:
        worker.close()


@pytest.mark.slow
def test_abandoned_request_stops_generating_and_small_requests_stay_fast(engine):
    """The issue's probe: n=256, max_tokens=240, ignore_eos abandoned by its client; before the
    fix it generated on for the whole request (~61,000 tokens) and a small request waited for it."""
    with ServerThread(create_app(engine, model_name="arith")) as srv:
        base = srv.url

        def generated() -> int:
            return httpx.get(base + "/ledger").json()["engine"]["generated_tokens"]

        def small() -> float:
            started = time.monotonic()
            r = httpx.post(base + "/completions", json={"model": "arith", "prompt": "Compute: 3+4=", "max_tokens": 8,
                                                        "temperature": 0}, timeout=60)
            assert r.status_code == 200 and len(r.json()["choices"]) == 1
            return time.monotonic() - started

        normal = min(small() for _ in range(3))
        big = {"model": "arith", "prompt": "Compute: 12*7+5=", "n": 256, "max_tokens": 240, "ignore_eos": True}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(base + "/completions", json=big, timeout=1.5)  # the client gives up and closes
        time.sleep(SETTLE_S)  # the disconnect is seen at once; the step in flight finishes
        first = generated()
        latency = small()
        time.sleep(1.0)
        assert generated() - first <= 8 + 1  # only the small request's tokens
        assert first < 256 * 240
        assert latency < max(5.0, 20 * normal)  # before the fix: 50-70 s on a busy 2-core machine

        # A whole search (/v1/solve) abandoned likewise: the search thread stops, and the engine with it.
        solve = {"question": "12*7+5-3*4+8*9", "strategy": "beam", "budget": 1024, "prm": "arith"}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(base + "/solve", json=solve, timeout=2.0)
        time.sleep(SETTLE_S)
        first = generated()
        time.sleep(1.0)
        assert generated() == first
        assert not engine.has_work()  # read from here: the worker is idle, nothing races it
