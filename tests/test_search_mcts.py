"""MCTS on the merged tree (search/mcts.py), end to end on the bundled arith model: visit
accounting, count priors and widening by repeated samples, rollout leaves as candidates, the
budget in full-solution equivalents and in tokens, determinism per seed."""

from __future__ import annotations

import pytest

from reason.core.context import Runner
from reason.core.engine.base import Sampling, Stop
from reason.core.tree import Node, Tree
from reason.shortcuts import solve_many
from rewards.catalog import load_prm, load_value
from rewards.scoring import NodeScorer
from search.budget import Budget
from search.mcts import _Search, priors, stats
from tasks.arith.problems import generate
from tasks.registry import get_domain


@pytest.fixture(scope="module")
def questions():
    return [p.question for p in generate(3, 2, seed=11)]


def _mcts_nodes(tree: Tree) -> list[Node]:
    return [n for n in tree if "mcts" in n.extra]


def _kids(node: Node) -> list[Node]:
    return [c for c in node.children if "mcts" in c.extra]


def _path_tokens(tree: Tree, node: Node) -> int:
    return sum(len(n.token_ids) for n in tree.path(node)[1:])


def _solution_tokens(tree: Tree) -> int:
    """A full solution's tokens by the documented rule: the count-weighted mean over the finished
    paths of the search, else the longest path."""
    done = [n for n in _mcts_nodes(tree) if n.finished]
    if not done:
        return max(_path_tokens(tree, n) for n in _mcts_nodes(tree))
    return round(sum(_path_tokens(tree, n) * n.count for n in done) / sum(n.count for n in done))


def _check_accounting(tree: Tree) -> None:
    """Every visit counted once: N(s) = E(s) + sum of the children's N (and the same for W with
    the node's own value); a finished step's N is its count; siblings are distinct."""
    for node in _mcts_nodes(tree):
        s, kids = stats(node), _kids(node)
        assert s["E"] in (0, 1)
        own = s["V"] if s["E"] else 0.0
        if kids:
            assert s["N"] == s["E"] + sum(stats(c)["N"] for c in kids)
            assert s["W"] == pytest.approx(own + sum(stats(c)["W"] for c in kids))
            assert sum(stats(c)["P"] for c in kids) == pytest.approx(1.0)
        elif node.finished:
            assert s["E"] == 1 and s["N"] == node.count and s["W"] == pytest.approx(node.count * s["V"])
        else:
            assert s["N"] == s["E"]
        step_kids = [c for c in kids if "rollout_of" not in c.extra]
        assert sum(c.count for c in step_kids) <= s["M"]  # every sample made a node or raised a count
        tokens = [tuple(c.token_ids) for c in node.children]
        assert len(tokens) == len(set(tokens))
    assert stats(tree.root)["E"] == 0


@pytest.mark.parametrize("evaluate", ["prm", "value", "rollout"])
def test_visit_accounting_in_every_mode(engine, questions, evaluate):
    prm = load_prm("arith")
    value = load_value("arith") if evaluate == "value" else None
    results = solve_many(engine, questions, strategy="mcts", budget=4, prm=prm, value=value, seed=3,
                         evaluate=evaluate)
    for r in results:
        assert r.info["evaluate"] == evaluate and r.info["simulations"] >= 1
        _check_accounting(r.tree)
        assert stats(r.tree.root)["N"] >= r.info["evaluations"] >= 1
        finished = [n for n in _mcts_nodes(r.tree) if n.finished]
        assert {c.node_id for c in r.candidates} >= {n.id for n in finished}
        if evaluate == "value":
            assert r.ledger.value_calls > 0
        if evaluate == "rollout":
            rollouts = [n for n in _mcts_nodes(r.tree) if "rollout_of" in n.extra]
            assert rollouts
            for end in rollouts:  # the rollout holds its parent's evaluation
                assert end.parent.id == end.extra["rollout_of"] and stats(end)["E"] == 1
                assert stats(end.parent)["E"] == 0
            # Finished rollouts are complete solutions, so answer candidates.
            assert any(n.finished for n in rollouts)
        if r.info["stop"] == "tokens":  # the budget: n full-solution equivalents of tokens
            assert r.ledger.generated_tokens >= 4 * _solution_tokens(r.tree)


def test_repeated_sample_raises_a_prior_instead_of_adding_a_node(engine, questions):
    domain = get_domain("arith")
    problem = domain.make_problem(questions[0])
    runner = Runner(engine)
    ctx = runner.context(problem.prompt, seed=5, meta={"question": problem.question},
                         prm=NodeScorer(load_prm("arith"), delimiter=domain.delimiter))
    search = _Search(ctx, Budget(n=8), Stop(max_tokens=256), evaluate="prm",
                     step=Stop(strings=(domain.delimiter,), max_tokens=64), sample=Sampling(temperature=0.8),
                     children=3, widen_alpha=0.5, c_puct=1.5, prior="counts")
    root = ctx.tree.root
    repeats = []

    async def widen() -> None:
        await search.draw(root, [root], 3)
        for _ in range(8):
            before = {c: (c.count, stats(c)["P"]) for c in _kids(root)}
            await search.draw(root, [root], 1)
            after = _kids(root)
            new = [c for c in after if c not in before]
            grown = [c for c in before if c.count > before[c][0]]
            assert len(new) + len(grown) == 1  # one sample: one new node, or one count raised
            if grown:
                [c] = grown
                assert c.count == before[c][0] + 1
                assert stats(c)["P"] > before[c][1] if len(before) > 1 else stats(c)["P"] == 1.0
                repeats.append(c)

    runner.run([widen()])
    kids = _kids(root)
    assert sum(c.count for c in kids) == stats(root)["M"] == 11
    assert [stats(c)["P"] for c in kids] == pytest.approx([c.count / 11 for c in kids])
    assert priors(kids, "counts") == pytest.approx([c.count / 11 for c in kids])
    assert repeats, "no sample repeated an existing step"
    _check_accounting(ctx.tree)


def test_policy_priors_renormalise_the_step_probabilities(engine, questions):
    results = solve_many(engine, questions[:1], strategy="mcts", budget=4, prm=load_prm("arith"), seed=3,
                         prior="policy")
    for node in _mcts_nodes(results[0].tree):
        kids = _kids(node)
        if len(kids) > 1:
            probs = [2.718281828459045 ** sum(c.logprobs) for c in kids]
            assert [stats(c)["P"] for c in kids] == pytest.approx([p / sum(probs) for p in probs])
    _check_accounting(results[0].tree)


def test_same_seed_same_tree(engine, questions):
    prm = load_prm("arith")
    runs = [solve_many(engine, questions, strategy="mcts", budget=4, prm=prm, seed=2) for _ in range(2)]
    for a, b in zip(*runs):
        assert a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"]
        assert a.answer == b.answer
    other = solve_many(engine, questions, strategy="mcts", budget=4, prm=prm, seed=9)
    assert [r.tree.to_dict()["nodes"] for r in other] != [r.tree.to_dict()["nodes"] for r in runs[0]]


@pytest.mark.parametrize(("evaluate", "tokens"), [("prm", 60), ("rollout", 60), ("prm", 2)])
def test_token_budget_is_respected(engine, questions, evaluate, tokens):
    results = solve_many(engine, questions, strategy="mcts", budget=16, budget_tokens=tokens, prm=load_prm("arith"),
                         seed=1, evaluate=evaluate)
    for r in results:
        assert r.ledger.generated_tokens <= tokens
        assert r.info["stop"] in ("token_budget", "budget")
        _check_accounting(r.tree)
        if tokens == 2:  # no step fits: the root's first draw got nothing, the answer is a 2-token stub
            assert not _mcts_nodes(r.tree)[1:] and len(r.candidates) == 1


def _q(node: Node) -> float:
    return stats(node)["W"] / stats(node)["N"] if stats(node)["N"] else -1.0


def _expected_pick(tree: Tree, choose: str) -> Node:
    """The documented final choice: the best-scored finished node (ties: visits, then older), or
    for ``visits`` / ``value`` the leaf reached by following the most visited / highest-Q children
    when it is finished."""
    done = [n for n in _mcts_nodes(tree) if n.finished]
    best = max(done, key=lambda n: (n.scores["arith"], stats(n)["N"], -n.id))
    if choose == "prm":
        return best
    rank = (lambda c: (stats(c)["N"], _q(c), -c.id)) if choose == "visits" else (lambda c: (_q(c), stats(c)["N"], -c.id))
    node = tree.root
    while kids := _kids(node):
        node = max(kids, key=rank)
    return node if node.finished else best


def test_final_choice(engine, questions):
    prm = load_prm("arith")
    for choose in ("prm", "visits", "value"):
        for r in solve_many(engine, questions, strategy="mcts", budget=4, prm=prm, seed=3, choose=choose,
                            simulations=6):
            assert r.info["simulations"] <= 6 and r.info["stop"] in ("simulations", "closed")
            assert r.text == r.tree.text(_expected_pick(r.tree, choose))
            assert sorted(c.count for c in r.candidates) == sorted(n.count for n in _mcts_nodes(r.tree) if n.finished)


def test_without_widening_each_node_is_sampled_once(engine, questions):
    results = solve_many(engine, questions, strategy="mcts", budget=8, prm=load_prm("arith"), seed=3,
                         widen_alpha=None, children=2)
    for r in results:
        assert {stats(n)["M"] for n in _mcts_nodes(r.tree)} <= {0, 2}
        _check_accounting(r.tree)
