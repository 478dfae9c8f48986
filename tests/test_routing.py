"""Several policy servers behind the ``openai`` backend: URL lists, tree-affine routing, failover.

The servers are real ``reason serve`` apps over the bundled arith model on 127.0.0.1 (in threads);
the process-level check (three ``reason serve`` processes, one killed mid-eval) is in
tests/test_routing_process.py."""

from __future__ import annotations

import threading
import time

import pytest

from reason.core.engine.hf import HFEngine
from reason.core.engine.openai import OpenAIEngine
from reason.core.engine.routing import ServerPool, parse_base_urls
from reason.core.errors import ReasonError
from reason.serve import create_app
from reason.serve.thread import ServerThread
from reason.shortcuts import solve
from rewards.catalog import load_prm
from tasks.arith.problems import generate
from tasks.registry import resolve_model


def test_base_url_lists_from_commas_lists_and_files(tmp_path):
    assert parse_base_urls("http://a:1, http://b:2/v1/") == ["http://a:1/v1", "http://b:2/v1"]
    assert parse_base_urls(["http://a:1/v1"]) == ["http://a:1/v1"]
    listing = tmp_path / "servers.txt"
    listing.write_text("# policy servers\nhttp://a:1/v1\n\nhttp://b:2  # second\n")
    assert parse_base_urls(f"@{listing}") == ["http://a:1/v1", "http://b:2/v1"]
    for bad, needle in (("http://a:1,http://a:1/v1", "more than once"), ("a:1", "not an http"),
                        (" , ", "names no server"), (f"@{tmp_path / 'missing'}", "cannot read")):
        with pytest.raises(ReasonError, match=needle):
            parse_base_urls(bad)


def test_trees_stick_to_a_server_new_ones_go_to_the_least_loaded_and_move_when_it_fails():
    pool = ServerPool(["http://a/v1", "http://b/v1", "http://c/v1"])
    first = pool.pick(1)
    second = pool.pick(2)  # the first is busy: another server
    assert second != first
    third = pool.pick(3)
    assert len({first, second, third}) == 3
    pool.finished(first, 10, 0)
    assert pool.pick(1) == first  # sticky, even though other servers are as loaded
    pool.finished(first, 20, 10)
    assert pool.failed(second, take_out=True)  # the request on tree 2 failed: the server goes out
    moved = pool.pick(2)
    assert moved not in (second,) and pool.stats[moved].trees_moved_in == 1
    assert pool.down() == [second]
    assert pool.pick(4) != second  # nothing new goes to a server taken out
    pool.revive(second)
    assert pool.down() == []
    stats = pool.report()
    assert stats[first]["requests"] == 2 and stats[first]["cached_prompt_tokens"] == 10
    assert stats[first]["cached_share"] == pytest.approx(10 / 30)
    held = pool.stats[first].trees
    pool.release(1)
    assert pool.stats[first].trees == held - 1


def test_round_robin_spreads_one_tree():
    pool = ServerPool(["http://a/v1", "http://b/v1"], routing="round_robin")
    picks = [pool.pick(7) for _ in range(4)]
    assert sorted(picks) == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def servers():
    """Two ``reason serve`` apps, each over its own arith engine."""
    apps = [create_app(HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu"),
                       model_name="arith") for _ in range(2)]
    threads = [ServerThread(app).start() for app in apps]
    for thread, app in zip(threads, apps):
        thread.state = app.state.server
    yield threads
    for t in threads:
        t.stop()


def snapshot(result):
    return [(n.id, n.parent.id if n.parent else None, tuple(n.token_ids)) for n in result.tree]


def run_all(engine, questions, prm):
    return [solve(engine, q, strategy="particle", budget=4, seed=i, prm=prm) for i, q in enumerate(questions)]


def test_each_tree_stays_on_one_server_and_finds_its_paths_cached(servers):
    tokenizer = servers[0].state.engine.tokenizer
    urls = [s.url for s in servers]
    questions = [p.question for p in generate(3, 4, seed=3)]
    prm = load_prm("arith")
    single = OpenAIEngine(urls[0], tokenizer)
    want = [snapshot(r) for r in run_all(single, questions, prm)]
    before = [s.state.worker.requests for s in servers]
    both = OpenAIEngine(",".join(urls), tokenizer)
    got = run_all(both, questions, prm)
    assert [snapshot(r) for r in got] == want  # routing does not change what is generated
    stats = both.server_stats()
    answered = [s.state.worker.requests - b for s, b in zip(servers, before)]
    assert [s["requests"] for s in stats] == answered and all(answered)
    assert all(s["trees_moved_in"] == 0 and s["failures"] == 0 for s in stats)
    sent = sum(s["prompt_tokens"] for s in stats)
    cached = sum(s["cached_prompt_tokens"] for s in stats)
    assert cached / sent > 0.8  # only each tree's first prompt is new to its server (4 trees)
    rr = OpenAIEngine(urls, tokenizer, routing="round_robin")
    run_all(rr, questions, prm)
    rr_stats = rr.server_stats()
    assert sum(s["cached_prompt_tokens"] for s in rr_stats) / sum(s["prompt_tokens"] for s in rr_stats) < cached / sent


def test_a_server_that_stops_answering_loses_no_search(servers):
    tokenizer = servers[0].state.engine.tokenizer
    extra = ServerThread(create_app(HFEngine.from_pretrained(resolve_model("arith"), dtype="float32",
                                                             device="cpu"), model_name="arith")).start()
    questions = [p.question for p in generate(3, 6, seed=4)]
    prm = load_prm("arith")
    want = [snapshot(r) for r in run_all(OpenAIEngine(servers[0].url, tokenizer), questions, prm)]
    engine = OpenAIEngine([extra.url, servers[1].url], tokenizer, retries=2, backoff=0.05, probe_interval=0.2)
    results: list = []
    runner = threading.Thread(target=lambda: results.extend(run_all(engine, questions, prm)))
    runner.start()
    deadline = time.monotonic() + 60
    while engine.server_stats()[0]["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    extra.stop()  # the server of some trees stops answering mid-run
    runner.join(timeout=300)
    assert [snapshot(r) for r in results] == want
    stats = engine.server_stats()
    assert stats[0]["healthy"] is False and stats[1]["trees_moved_in"] >= 1 and stats[0]["failures"] >= 1
    engine.close()
