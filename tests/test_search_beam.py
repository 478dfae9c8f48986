"""Beam search and DVTS on the bundled arith model: each state expanded once (a repeated state
weighted, or the beam refilled with distinct states), look-ahead ranking, the final completion of
unfinished beams, votes that count multiplicity, DVTS subtrees choosing among their own samples
scored in one PRM call per iteration, token budgets, seeding."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reason.core.context import SearchContext
from reason.core.tree import Node, Tree
from reason.shortcuts import solve, solve_many
from rewards.catalog import load_prm
from rewards.scoring import NodeScorer, question_of, split_steps
from tasks.registry import get_domain

DELIMITER = get_domain("arith").delimiter


@pytest.fixture(scope="module")
def prm():
    return load_prm("arith")


@pytest.fixture(scope="module")
def greedy(engine, problems):
    """Greedy decoding of the first 8 problems: the baseline a search must not fall below."""
    return solve_many(engine, [p.question for p in problems[:8]], strategy="greedy", budget=1)


def correct(results, problems) -> int:
    return sum(r.answer == str(p.answer) for r, p in zip(results, problems))


@contextmanager
def recorded_scoring() -> Iterator[dict[int, list[list[Node]]]]:
    """Record the nodes of every PRM scoring request, per tree (a spy: the scorer still works)."""
    calls: dict[int, list[list[Node]]] = defaultdict(list)
    real = NodeScorer.score_many

    def score_many(self: NodeScorer, requests: list[tuple[Tree, list[Node]]]) -> list[list[float]]:
        for tree, nodes in requests:
            calls[tree.uid].append(list(nodes))
        return real(self, requests)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NodeScorer, "score_many", score_many)
        yield calls


@contextmanager
def recorded_expansions() -> Iterator[dict[int, dict[int, list[Node]]]]:
    """Record what every expansion returned (one entry per sample), per tree and node id (a spy:
    the context still does the work); a node expanded twice fails the search."""
    drawn: dict[int, dict[int, list[Node]]] = defaultdict(dict)
    real = SearchContext.expand

    async def expand(self: SearchContext, node: Node, n: int = 1, *args, **kwargs) -> list[Node]:
        out = await real(self, node, n, *args, **kwargs)
        assert node.id not in drawn[self.tree.uid], "a node was expanded twice"
        drawn[self.tree.uid][node.id] = list(out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchContext, "expand", expand)
        yield drawn


def assert_distinct_siblings(tree: Tree) -> None:
    for node in tree:
        ids = [tuple(c.token_ids) for c in node.children]
        assert len(ids) == len(set(ids))


def expected_beam(candidates: list[Node], keep: int, width: int, duplicates: str) -> tuple[list[Node], list[int]]:
    """The beam and its draws by the documented rule, from the scored candidates of one step."""
    live = [c for c in candidates if not c.finished]
    rank = lambda c: (-c.scores["arith"], c.id)
    if duplicates == "filter":  # the best distinct candidates, the samples shared out
        top = sorted(live, key=rank)[:keep]
        total = keep * width
        return top, [total // len(top) + (i < total % len(top)) for i in range(len(top))]
    # weight: the best `keep` samples (a node counts once per sample; among equal scores the j-th
    # sample of a node comes after the first j of the others), a node's slots times width
    entries = sorted(((c, j) for c in live for j in range(c.count)), key=lambda e: (rank(e[0])[0], e[1], e[0].id))
    slots = Counter(c for c, _ in entries[:keep])
    beam = sorted(slots, key=rank)
    return beam, [slots[c] * width for c in beam]


@pytest.mark.parametrize("duplicates", ["weight", "filter"])
def test_beam_expands_distinct_states_once(engine, problems, prm, greedy, duplicates):
    n, width = 8, 2
    keep = n // width
    results = solve_many(engine, [p.question for p in problems[:8]], strategy="beam", budget=n, prm=prm,
                         width=width, duplicates=duplicates, seed=2)
    short = heavy = 0
    for r in results:
        tree = r.tree
        assert_distinct_siblings(tree)
        assert sum(c.count for c in tree.root.children) == n
        candidates = list(tree.root.children)
        assert len(r.info["beams"]) == len(r.info["draws"])
        for ids, draws in zip(r.info["beams"], r.info["draws"]):
            beam = [tree.node(i) for i in ids]
            assert len(set(ids)) == len(ids)  # distinct states
            assert (beam, draws) == expected_beam(candidates, keep, width, duplicates)
            live = sum(c.count for c in candidates if not c.finished)
            assert sum(draws) == (keep if duplicates == "filter" else min(keep, live)) * width
            # Each beam node was expanded once, with its draws: its children's counts add up.
            assert [sum(c.count for c in b.children) for b in beam] == draws
            short += len(beam) < keep
            heavy += max(draws) > width
            candidates = [c for b in beam for c in b.children]
        assert r.info["kept_per_step"] == [len(b) for b in r.info["beams"]]
        best = max(r.candidates, key=lambda c: c.score)
        assert r.answer == best.answer
    # Some steps had fewer distinct states than the beam's width: filter refilled with all there
    # were, weight let a repeated state draw more.
    assert short and heavy
    assert correct(results, problems) >= correct(greedy, problems)


def top_samples(entries: dict[Node, int], score: dict[Node, float], keep: int) -> list[Node]:
    """The distinct unfinished nodes among the best ``keep`` samples (``entries[c]`` samples of node
    ``c``; the j-th sample of a node after the first j of equal-scored ones), best first."""
    ranked = sorted(((c, j) for c, k in entries.items() if not c.finished for j in range(k)),
                    key=lambda e: (-score[e[0]], e[1], e[0].id))
    return sorted({c for c, _ in ranked[:keep]}, key=lambda c: (-score[c], c.id))


def test_beam_lookahead_ranks_by_the_greedy_step_after(engine, problems, prm):
    n, width = 8, 2
    keep = n // width
    results = solve_many(engine, [p.question for p in problems[:4]], strategy="beam", budget=n, prm=prm,
                         width=width, lookahead=1, seed=2)
    decided_by_lookahead = 0
    for r in results:
        tree = r.tree
        assert_distinct_siblings(tree)
        # The step's samples per node: a beam node's children, less the greedy look-ahead child
        # (made first, so its oldest) when no sample repeated it.
        entries = {c: c.count for c in tree.root.children}
        for ids in r.info["beams"]:
            live = [c for c in entries if not c.finished]
            ahead = {c: c.children[0].scores["arith"] for c in live}  # every live candidate looked ahead
            mine = {c: prm.score(question_of(tree), split_steps(tree.text(c), DELIMITER))[-1] for c in live}
            by_ahead, by_own = top_samples(entries, ahead, keep), top_samples(entries, mine, keep)
            assert [tree.node(i) for i in ids] == by_ahead
            decided_by_lookahead += set(by_own) != set(by_ahead)
            entries = {c: c.count - (c is b.children[0]) for b in map(tree.node, ids) for c in b.children}
            entries = {c: k for c, k in entries.items() if k}
    assert decided_by_lookahead  # ranking by the candidates' own scores would have kept others


def test_beam_completes_unfinished_beams(engine, problems, prm):
    qs = [p.question for p in problems[:6]]
    results = solve_many(engine, qs, strategy="beam", budget=8, prm=prm, max_steps=2, seed=5)
    completed = 0
    for r in results:
        assert len(r.info["beams"]) <= 1  # the root's step, one more, then the completion
        ids = {c.node_id for c in r.candidates}
        for b in r.info["completed"]:
            node = r.tree.node(b)
            assert not node.finished and all(b not in ids_ for ids_ in r.info["beams"])
            [end] = node.children  # one completion, to the end
            assert end.count == 1 and end.finish_reason == "eos" and end.id in ids
            completed += 1
        # Every candidate is a finished sample or a completion.
        assert all(r.tree.node(i).finished for i in ids)
    assert completed > 0


@pytest.mark.parametrize(("strategy", "select"), [("beam", "majority"), ("dvts", "weighted")])
def test_votes_count_multiplicity(engine, problems, prm, strategy, select):
    qs = [p.question for p in problems[:6]]
    repeated = 0
    for r in solve_many(engine, qs, strategy=strategy, budget=8, prm=prm, select=select, seed=3):
        weight: dict[str | None, float] = defaultdict(float)
        for c in r.candidates:
            # A candidate stands for every sample that produced its node.
            assert c.count == r.tree.node(c.node_id).count
            repeated += c.count > 1
            if c.answer is not None:
                weight[c.answer] += c.count * (1.0 if select == "majority" else c.score)
        assert weight[r.answer] == pytest.approx(max(weight.values()))
    assert repeated


def test_dvts_subtrees_pick_from_their_own_samples_scored_in_one_call(engine, problems, prm, greedy):
    n, width = 8, 2
    subtrees = n // width
    qs = [p.question for p in problems[:8]]
    with recorded_scoring() as calls, recorded_expansions() as drawn:
        results = solve_many(engine, qs, strategy="dvts", budget=n, prm=prm, width=width, seed=7)
    several = shared = 0
    for r in results:
        tree = r.tree
        assert_distinct_siblings(tree)
        requests, paths = calls[tree.uid], r.info["paths"]
        assert r.info["subtrees"] == subtrees and len(paths) == r.info["iterations"]
        # One scoring request per iteration (every subtree's new children), one for the final choice.
        assert len(requests) == r.info["iterations"] + 1
        holders: list[Node | None] = [tree.root] * subtrees
        expected: list[Node] = []
        for nodes, ids in zip(requests, paths):
            groups: dict[Node, list[int]] = defaultdict(list)
            for i, h in enumerate(holders):
                if h is not None:
                    groups[h].append(i)
            assert set(nodes) == {c for node in groups for c in drawn[tree.uid][node.id]}
            for node, members in groups.items():
                # One request for the subtrees on a node; subtree j owns samples j*width...
                [samples] = [drawn[tree.uid][node.id]]
                assert len(samples) == width * len(members)
                shared += len(members) > 1
                for j, i in enumerate(members):
                    own = samples[j * width:(j + 1) * width]
                    pick = min(own, key=lambda c: (-c.scores["arith"], c.id))
                    assert ids[i] == (None if pick.finished else pick.id)
                    if pick.finished:  # the subtree ended: its finished samples are candidates
                        expected += [c for c in own if c.finished]
            holders = [None if i is None else tree.node(i) for i in ids]
        if expected:
            assert Counter({c.node_id: c.count for c in r.candidates}) == Counter(c.id for c in expected)
        else:  # nothing finished: the subtrees' last nodes are the candidates
            assert not any(tree.node(c.node_id).finished for c in r.candidates)
        several += sum(c.count for c in r.candidates) > subtrees
        best = max(r.candidates, key=lambda c: c.score)
        assert r.answer == best.answer
    assert several and shared
    assert correct(results, problems) >= correct(greedy, problems)


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_token_budget_and_seed(engine, problems, prm, strategy):
    q = problems[1].question
    for cap in (30, 90):
        r = solve(engine, q, strategy=strategy, budget=8, budget_tokens=cap, prm=prm, seed=4)
        assert 0 < r.ledger.generated_tokens <= cap
        assert r.candidates
    a = solve(engine, q, strategy=strategy, budget=8, prm=prm, seed=4)
    b = solve(engine, q, strategy=strategy, budget=8, prm=prm, seed=4)
    assert a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"] and a.answer == b.answer
