"""A*-decoding on the bundled arith model: pops in f order replayed from the tree, the closed set
(every state expanded in one go, also with identical siblings kept apart), redraws, the anytime
search and its token allowance, token budgets and seeding."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reason.core.context import SearchContext
from reason.core.tree import Node, Tree
from reason.shortcuts import solve, solve_many
from rewards.base import StepScores
from rewards.catalog import load_prm
from search.astar import score_drops
from tasks.arith.scorers import ArithPRM

K = 4
N = 8
SPEND = {"exact": 0.5, "late": 1.0}


@pytest.fixture(scope="module")
def prm():
    return load_prm("arith")


class LatePRM(ArithPRM):
    """Judges only the answer line (right 1.0, wrong 0.7); every other step scores 0.2. A wrong
    answer (f = 0.8 + 0.3) is then popped as soon as it is drawn, before the search has found the
    right one (f = 0.8): the anytime search must go on to find it."""

    def score_batch(self, items):
        scores = []
        for question, steps in items:
            right = self.check(question, steps)
            scores.append([(1.0 if ok else 0.7) if step.strip().startswith("answer") else 0.2
                           for ok, step in zip(right, steps)])
        return StepScores(scores, 0)


@contextmanager
def recorded_requests() -> Iterator[dict[int, list[tuple[Node, list[Node]]]]]:
    """Every expansion request in order, per tree: the node and what came back (one entry per
    sample). A spy: the context still does the work."""
    requests: dict[int, list[tuple[Node, list[Node]]]] = defaultdict(list)
    real = SearchContext.expand

    async def expand(self: SearchContext, node: Node, n: int = 1, *args, **kwargs) -> list[Node]:
        out = await real(self, node, n, *args, **kwargs)
        requests[self.tree.uid].append((node, list(out)))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchContext, "expand", expand)
        yield requests


@pytest.fixture(scope="module", params=["exact", "late"])
def runs(request, engine, problems):
    """A* (its requests recorded) and best-of-N at budget N on the same problems and seeds, with
    the exact arith PRM (right steps 1, wrong 0) or one that judges only the answer (A* may then
    spend as many tokens as best-of-N)."""
    prm = LatePRM() if request.param == "late" else load_prm("arith")
    qs = [p.question for p in problems]
    with recorded_requests() as requests:
        astar = solve_many(engine, qs, strategy="astar", budget=N, prm=prm, k=K, spend=SPEND[request.param], seed=8)
    best_of_n = solve_many(engine, qs, strategy="best_of_n", budget=N, prm=prm, seed=8)
    return request.param, astar, dict(requests), best_of_n


def correct(results, problems) -> int:
    return sum(r.answer == str(p.answer) for r, p in zip(results, problems))


def path_tokens(tree: Tree, node: Node) -> tuple[int, ...]:
    return tuple(t for n in tree.path(node)[1:] for t in n.token_ids)


def replay(tree: Tree, popped: list[tuple[float, float]]) -> tuple[list[Node], dict[Node, float], dict[Node, float]]:
    """Replay A*'s pops from the tree alone: ``f = g + h`` from the recorded PRM scores (``h = 1 -
    score``, ``g`` the accumulated score drops, the root scoring 1), the lowest ``(f, deeper,
    older)`` open node popped each time, an expanded node's children opened. Returns the pops,
    ``f`` and ``g``."""
    root = tree.root
    g, score, f = {root: 0.0}, {root: 1.0}, {root: 0.0}
    open_nodes, pops = {root}, []
    for _ in popped:
        node = min(open_nodes, key=lambda n: (f[n], -n.depth, n.id))
        pops.append(node)
        open_nodes.remove(node)
        for c in node.children:
            score[c] = c.scores["arith"]
            g[c] = score_drops(g[node], score[node], score[c])
            f[c] = g[c] + (1.0 - score[c])
            open_nodes.add(c)
    return pops, f, g


def test_astar_pops_in_f_order_and_answers_the_best_goal(runs, problems):
    kind, results, _, best_of_n = runs
    later = 0
    for r in results:
        tree, info = r.tree, r.info
        pops, f, _ = replay(tree, info["popped"])
        assert [p[0] for p in info["popped"]] == pytest.approx([f[n] for n in pops], abs=1e-12)
        assert {n for n in tree if "astar_f" in n.extra} == set(pops)
        # Popped unfinished nodes were expanded, in pop order; finished ones are the goals.
        assert [n.id for n in pops if not n.finished] == info["expanded"]
        assert [n.id for n in pops if n.finished] == info["goals"]
        assert info["expansions"] == len(info["expanded"]) <= N
        goals = [n for n in pops if n.finished]
        if goals:  # (else the best open node was completed greedily)
            assert all(not n.children for n in tree if n.id not in info["expanded"])
            best = min(goals, key=lambda n: (f[n], -n.depth, n.id))
            assert r.text == tree.text(best)
            later += best is not goals[0]
        assert r.ledger.prefill_tokens == r.ledger.prompt_tokens
    if kind == "late":  # a later goal beat the first somewhere
        assert later
    else:
        assert correct(results, problems) >= correct(best_of_n, problems)


def test_astar_expands_each_state_once_with_redraws(runs):
    kind, results, requests, _ = runs
    score = lambda n: 1.0 if n.is_root else n.scores["arith"]
    redrawn = 0
    for r in results:
        tree, info = r.tree, r.info
        # Group the requests into expansions: a node's requests come in one run, never again later.
        expansions: list[tuple[Node, list[list[Node]]]] = []
        for node, out in requests[tree.uid]:
            if expansions and expansions[-1][0] is node:
                expansions[-1][1].append(out)
            else:
                expansions.append((node, [out]))
        if not info["goals"]:
            expansions = expansions[:-1]  # the greedy completion of the best open node
        assert [n.id for n, _ in expansions] == info["expanded"]  # each expanded node once
        assert len({path_tokens(tree, n) for n, _ in expansions}) == len(expansions)
        for (node, draws), drawn in zip(expansions, info["draws"]):
            assert all(len(d) == K for d in draws) and drawn == K * len(draws) <= K * 17
            assert sum(c.count for c in node.children) == drawn
            seen: set[Node] = set()
            for j, out in enumerate(draws):
                fresh = [c for c in out if c not in seen]
                seen |= set(out)
                # Drew again only when the PRM judged every new child a mistake (a fall of more
                # than 1/2 in score), never at the root.
                mistakes = all(c.scores["arith"] < score(node) - 0.5 for c in fresh)
                if j < len(draws) - 1:
                    assert mistakes and not node.is_root
            redrawn += len(draws) > 1
    assert redrawn or kind == "late"  # (that PRM judges no step a mistake)


def test_astar_closed_set_without_merging(engine, problems, prm):
    qs = [p.question for p in problems[:8]]
    results = solve_many(engine, qs, strategy="astar", budget=N, prm=prm, k=K, merge=False, seed=8)
    twins = 0
    for r in results:
        expanded = [r.tree.node(i) for i in r.info["expanded"]]
        assert len({path_tokens(r.tree, n) for n in expanded}) == len(expanded)
        by_state: dict[tuple[int, ...], list[Node]] = defaultdict(list)
        for n in r.tree:
            by_state[path_tokens(r.tree, n)].append(n)
        for same in by_state.values():
            twins += len(same) > 1
            assert sum("astar_f" in n.extra for n in same) <= 1  # one of identical twins is ever popped
    assert twins  # identical siblings were kept apart, and the closed set held


def test_astar_stops_when_solved_or_spent(runs, problems):
    kind, results, _, best_of_n = runs
    solved = 0
    for r in results:
        tree, info = r.tree, r.info
        if not info["goals"]:
            continue
        _, f, g = replay(tree, info["popped"])
        first = tree.node(info["goals"][0])
        allowance = SPEND[kind] * N * sum(len(n.token_ids) for n in tree.path(first)[1:])
        best = min(f[tree.node(i)] for i in info["goals"])
        open_nodes = [n for n in f if "astar_f" not in n.extra]
        if open_nodes and best <= min(g[n] for n in open_nodes):
            solved += 1  # no open node could lead to a better goal
        else:
            assert r.ledger.generated_tokens >= allowance or info["expansions"] == N or not open_nodes
    if kind == "late":
        return
    assert solved
    # The token target: at most half of best-of-N's generated tokens.
    assert sum(r.ledger.generated_tokens for r in results) <= 0.5 * sum(r.ledger.generated_tokens for r in best_of_n)


def test_astar_token_budget_and_seed(engine, problems, prm):
    q = problems[2].question
    for cap in (20, 80):
        r = solve(engine, q, strategy="astar", budget=16, budget_tokens=cap, prm=prm, seed=4)
        assert 0 < r.ledger.generated_tokens <= cap
    a = solve(engine, q, strategy="astar", budget=16, prm=prm, seed=4)
    b = solve(engine, q, strategy="astar", budget=16, prm=prm, seed=4)
    assert a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"] and a.answer == b.answer
