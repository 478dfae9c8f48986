"""The merged tree: identical siblings are one node with a multiplicity, for every engine and strategy."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from click.testing import CliRunner

from reason.cli import main
from reason.core.context import Runner
from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.openai import OpenAIEngine
from reason.core.tree import Tree
from reason.serve import create_app
from reason.serve.thread import ServerThread
from reason.shortcuts import solve, solve_many
from rewards.catalog import load_prm, load_value
from search import strategies
from tasks.arith.problems import generate
from tasks.registry import resolve_model

PATH = resolve_model("arith")


@pytest.fixture(scope="module")
def engine():
    return HFEngine.from_pretrained(PATH, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def questions():
    return [p.question for p in generate(3, 3, seed=5)]


def test_merge_folds_identical_siblings_and_keeps_the_books():
    tree = Tree([1, 2, 3])
    released = []
    tree.add_release_hook(lambda n: released.append(n.id))
    a = tree.add_child(tree.root, [4, 5], "ab", [-0.1, -0.2], "stop")
    b = tree.add_child(tree.root, [4, 5], "ab", [-0.1, -0.2], "stop")
    c = tree.add_child(tree.root, [4, 6], "ac", [-0.1, -0.3], "stop")
    d = tree.add_child(tree.root, [4, 5], "ab", [-0.1, -0.2], "stop")
    assert tree.ledger.unique_tree_tokens == 3 + 8
    out = tree.merge([b, c, d])
    assert out == [a, c, a]
    assert a.count == 3 and c.count == 1
    assert [n.id for n in tree.root.children] == [a.id, c.id]
    assert sorted(released) == [b.id, d.id]
    assert tree.ledger.unique_tree_tokens == 3 + 4 and tree.ledger.merged_tokens == 4
    # A node merged with its subtree: the subtree's tokens count as merged too.
    e = tree.add_child(tree.root, [4, 6], "ac")
    tree.add_child(e, [7, 7, 7], "x")
    assert tree.merge([e]) == [c] and c.count == 2 and tree.ledger.merged_tokens == 4 + 5
    # A key merges states that differ only in form.
    f = tree.add_child(c, [8], "x ")
    g = tree.add_child(c, [9], "x")
    assert tree.merge([f, g], key=lambda n: n.text.strip()) == [f, f] and f.count == 2
    # JSON and networkx carry multiplicities.
    back = Tree.from_json(tree.to_json())
    assert [(n.id, n.count) for n in back] == [(n.id, n.count) for n in tree]
    assert back.ledger == tree.ledger
    graph = tree.to_networkx()
    assert graph.nodes[a.id]["count"] == 3


def test_context_merges_samples_for_every_request(engine):
    runner = Runner(engine)
    merged = runner.context("2+3*4\n", seed=1)
    apart = runner.context("2+3*4\n", seed=1, merge=False)

    async def grow(ctx):
        return await ctx.expand(ctx.tree.root, 12, Stop(strings=("\n\n",)), Sampling(temperature=0.7))

    got, raw = runner.run([grow(merged), grow(apart)])
    assert len(got) == 12 and len(raw) == 12
    # The same seed draws the same samples; merging only folds them.
    assert [tuple(n.token_ids) for n in got] == [tuple(n.token_ids) for n in raw]
    distinct = list(dict.fromkeys(got))
    assert len(distinct) < 12, "the arith model repeats its first step: the test needs duplicates"
    assert Counter(got) == {n: n.count for n in distinct}
    assert merged.tree.root.children == distinct
    assert len({tuple(c.token_ids) for c in merged.tree.root.children}) == len(distinct)
    assert merged.tree.ledger.generated_tokens == apart.tree.ledger.generated_tokens
    assert merged.tree.ledger.merged_tokens == sum(len(n.token_ids) for n in raw) - sum(len(n.token_ids) for n in distinct)
    assert merged.tree.ledger.unique_tree_tokens + merged.tree.ledger.merged_tokens == apart.tree.ledger.unique_tree_tokens


def test_a_state_key_merges_steps_that_differ_in_form(engine):
    runner = Runner(engine)
    # A deliberately coarse key: steps with the same first character are one state.
    ctx = runner.context("17*3+4*9\n", seed=2, state_key=lambda text: text.strip()[:1])
    [got] = runner.run([ctx.expand(ctx.tree.root, 10, Stop(strings=("\n\n",)), Sampling(temperature=1.5))])
    kids = ctx.tree.root.children
    assert len({c.text.strip()[:1] for c in kids}) == len(kids)
    assert sum(c.count for c in kids) == 10 and Counter(got) == {c: c.count for c in kids}


def _siblings_distinct(tree: Tree) -> bool:
    return all(len({tuple(c.token_ids) for c in n.children}) == len(n.children) for n in tree)


STRATEGY_OPTIONS = {
    "greedy": {}, "sample": {}, "best_of_n": {"select": "majority"}, "beam": {}, "dvts": {}, "mcts": {},
    "astar": {}, "particle": {}, "epf": {}, "treepo": {"segment_tokens": 8}, "first_finish": {"k": 2},
}


@pytest.mark.parametrize("name", sorted(strategies.names()))
def test_every_strategy_returns_a_merged_deterministic_tree_within_its_token_budget(engine, questions, name):
    assert name in STRATEGY_OPTIONS, f"new strategy {name}: add it here"
    options = dict(STRATEGY_OPTIONS[name], prm=load_prm("arith"))
    runs = [solve_many(engine, questions, strategy=name, budget=8, seed=3, **options) for _ in range(2)]
    for result in runs[0]:
        assert _siblings_distinct(result.tree), name
        assert sum(c.count for c in result.candidates) >= len(result.candidates)
    assert [r.tree.to_dict()["nodes"] for r in runs[0]] == [r.tree.to_dict()["nodes"] for r in runs[1]]
    cap = 60
    capped = solve_many(engine, questions, strategy=name, budget=8, seed=3, budget_tokens=cap, **options)
    for result in capped:
        assert result.ledger.generated_tokens <= cap, (name, result.ledger.generated_tokens)
        assert _siblings_distinct(result.tree)


def test_merged_trees_over_http_match_in_process(engine, questions):
    with ServerThread(create_app(HFEngine.from_pretrained(PATH, dtype="float32", device="cpu"), model_name="arith")) as srv:
        client = OpenAIEngine.from_pretrained(PATH, base_url=srv.url)
        for strategy in ("best_of_n", "beam"):
            options = {"prm": load_prm("arith"), "temperature": 0.5}
            ref = solve_many(engine, questions, strategy=strategy, budget=8, seed=2, **options)
            got = solve_many(client, questions, strategy=strategy, budget=8, seed=2, **options)
            snap = [[(n.id, tuple(n.token_ids), n.count) for n in r.tree] for r in ref]
            assert [[(n.id, tuple(n.token_ids), n.count) for n in r.tree] for r in got] == snap
            assert any(n.count > 1 for r in ref for n in r.tree), "expected merged samples at temperature 0.5"
            assert all(_siblings_distinct(r.tree) for r in got)
        body = {"question": questions[0], "strategy": "best_of_n", "budget": 8, "prm": "arith", "budget_tokens": 60,
                "aggregation": "min", "options": {"temperature": 0.5}, "include_tree": True}
        reply = httpx.post(srv.url + "/solve", json=body, timeout=120).json()
        assert reply["ledger"]["generated_tokens"] <= 60
        assert sum(c["count"] for c in reply["candidates"]) >= len(reply["candidates"])
        bad = httpx.post(srv.url + "/solve", json={**body, "aggregation": "median"}, timeout=60)
        assert bad.status_code in (400, 422) and "aggregation" in bad.text


def test_aggregation_reaches_the_scorer(engine, questions):
    scores = {}
    for how in ("last", "min", "mean"):
        result = solve(engine, questions[0], strategy="best_of_n", budget=4, seed=0, prm=load_prm("arith"),
                       aggregation=how)
        node = result.tree.node(result.candidates[0].node_id)
        steps = node.extra["arith.steps"]
        scores[how] = result.candidates[0].score
        assert scores[how] == pytest.approx({"last": steps[-1], "min": min(steps), "mean": sum(steps) / len(steps)}[how])
    # value model and a bad name
    with pytest.raises(Exception, match="aggregation"):
        solve(engine, questions[0], strategy="best_of_n", budget=2, prm=load_prm("arith"), aggregation="median")
    assert load_value  # imported for the value path of other tests


def test_cli_aggregation_budget_tokens_and_tree_multiplicities():
    runner = CliRunner()
    out = runner.invoke(main, ["solve", "12+3*4-5", "--strategy", "best_of_n", "--budget", "8", "--temperature", "0.3",
                               "--budget-tokens", "150", "--aggregation", "min", "--json", "--show-tree"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["ledger"]["generated_tokens"] <= 150
    assert sum(c["count"] for c in data["candidates"]) == sum(n["count"] for n in data["tree"]["nodes"] if n["parent"] == 0)
    shown = runner.invoke(main, ["solve", "12+3*4-5", "--strategy", "best_of_n", "--budget", "8", "--temperature", "0.3",
                                 "--show-tree"])
    assert shown.exit_code == 0 and " x" in shown.output and "merged into identical siblings" in shown.output
    bad = runner.invoke(main, ["solve", "1+2", "--budget-tokens", "0"])
    assert bad.exit_code == 2 and "budget-tokens" in bad.output
    bad = runner.invoke(main, ["solve", "1+2", "--aggregation", "median"])
    assert bad.exit_code == 2 and "aggregation" in bad.output


def test_eval_reads_arith_problems_from_a_file(tmp_path):
    rows = [
        {"problem": "12+3*4-5", "answer": "19", "unique_id": "mine-1", "level": 3},
        {"problem": "2*(3+4)", "answer": "14"},
        {"problem": "2+2", "answer": "5"},
        "not json",
        {"answer": "3"},
    ]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "run.jsonl"
    result = CliRunner().invoke(main, ["eval", "--suite", "arith", "--data", str(data), "--strategy", "greedy",
                                       "--budget", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "mine.jsonl:3: answer '5' is not the value" in result.output
    assert "mine.jsonl:4: invalid JSON" in result.output and "mine.jsonl:5: no 'problem'" in result.output
    records = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["index"])
    assert [r["id"] for r in records] == ["mine-1", "arith-1"]
    assert [r["gold"] for r in records] == ["19", "14"]
    # levels select rows of the file
    only3 = CliRunner().invoke(main, ["eval", "--suite", "arith:3", "--data", str(data), "--strategy", "greedy",
                                      "--budget", "1"])
    assert only3.exit_code == 0 and "problems" in only3.output
    missing = CliRunner().invoke(main, ["eval", "--suite", "arith", "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "data" in missing.output
