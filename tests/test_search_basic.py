"""greedy, sample and best_of_n end to end on the bundled arith model (held-out level-3 problems)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from reason.core.engine.hf import HFEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.core.tree import Node, Tree
from rewards.catalog import load_prm
from search.budget import Budget
from reason.shortcuts import solve, solve_many
from tasks.arith.problems import generate


@pytest.fixture(scope="module")
def engine():
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def problems():
    return generate(3, 16, seed=11)


@pytest.fixture(scope="module")
def greedy(engine, problems):
    """Greedy decoding of every problem: the baseline the searches must beat (deterministic, so shared)."""
    return solve_many(engine, [p.question for p in problems], strategy="greedy", budget=1)


def correct(results, problems):
    return sum(r.answer == str(p.answer) for r, p in zip(results, problems))


def test_best_of_n_invariants_and_selection(engine, problems, greedy):
    prm = load_prm("arith")
    qs = [p.question for p in problems]
    by_prm = solve_many(engine, qs, strategy="best_of_n", budget=8, prm=prm, seed=1)
    by_vote = solve_many(engine, qs, strategy="best_of_n", budget=8, prm=None, select="majority", seed=1)
    for r_prm, r_vote in zip(by_prm, by_vote):
        assert len(r_prm.candidates) == 8
        scores = [c.score for c in r_prm.candidates]
        assert r_prm.answer == r_prm.candidates[scores.index(max(scores))].answer
        # Same seed, same samples: the vote sees the same candidates.
        assert [c.text for c in r_vote.candidates] == [c.text for c in r_prm.candidates]
        counts = Counter(c.answer for c in r_vote.candidates if c.answer is not None)
        assert counts[r_vote.answer] == max(counts.values())
        assert r_prm.ledger.prefill_tokens == r_prm.ledger.prompt_tokens
        assert r_prm.ledger.prm_calls <= 8
    assert correct(by_prm, problems) > correct(greedy, problems)


def test_greedy_and_sample_are_seeded(engine, problems):
    q = problems[0].question
    assert solve(engine, q, strategy="greedy", budget=1).text == solve(engine, q, strategy="greedy", budget=1).text
    a = solve(engine, q, strategy="sample", budget=1, seed=3)
    b = solve(engine, q, strategy="sample", budget=1, seed=3)
    assert a.text == b.text and a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"]


def test_many_problems_share_forwards(engine, problems):
    qs = [p.question for p in problems[:8]]
    before = engine.ledger.forward_passes
    solve_many(engine, qs, strategy="best_of_n", budget=4, select="majority")
    together = engine.ledger.forward_passes - before
    before = engine.ledger.forward_passes
    for q in qs:
        solve(engine, q, strategy="best_of_n", budget=4, select="majority")
    alone = engine.ledger.forward_passes - before
    assert together * 3 < alone


def test_bad_input(engine):
    with pytest.raises(ReasonError, match="^strategy: unknown strategy"):
        solve(engine, "3+4", strategy="nope")
    with pytest.raises(ReasonError, match="^budget:"):
        solve(engine, "3+4", budget=0)
    with pytest.raises(ReasonError, match="^problem:"):
        solve(engine, "3+(4")
    with pytest.raises(ReasonError, match="^prm:"):
        solve(engine, "3+4", strategy="best_of_n", select="prm")
    assert Budget(n=2).exhausted(solve(engine, "3+4", strategy="greedy").tree, 0.0) is False


def _mcts_leaf_value(node: Node, evaluate: str, value_name: str) -> float:
    """The value a new MCTS child was given when it was made, read back from the tree."""
    if node.finish_reason == "eos" or evaluate == "prm":
        return node.scores["arith"]
    if evaluate == "value":
        return node.scores[value_name]
    [end] = [c for c in node.children if c.extra.get("rollout_of") == node.id]
    return end.scores["arith"]


def _mcts_pick(tree: Tree, choose: str) -> Node:
    """The final answer by the documented rule: follow the most visited (or highest-Q) children
    from the root; short of a terminal, the terminal with the best Q; with none at all, the
    reached leaf (whose greedy completion is the answer). Ties go to the older node."""
    def stat(n: Node, key: str) -> float:
        return n.extra["mcts"][key]

    def q(n: Node) -> float:
        return stat(n, "W") / stat(n, "N")

    rank = (lambda n: stat(n, "N")) if choose == "visits" else q
    node = tree.root
    while kids := [c for c in node.children if "mcts" in c.extra]:
        node = max(kids, key=lambda c: (rank(c), -c.id))
    terminals = [n for n in tree if "mcts" in n.extra and n.finish_reason == "eos"]
    if node.finish_reason == "eos" or not terminals:
        return node
    return max(terminals, key=lambda n: (q(n), -n.id))


def _root_children(simulations: int, children: int, widen_alpha: float | None) -> int:
    """Children the root ends with: ``children`` at its first expansion, then (progressive
    widening) one more at every simulation that finds ``#children < N(root) ** widen_alpha``; the
    root's N before simulation ``i`` is ``i``."""
    kids = 0
    for visits in range(simulations):
        if kids == 0:
            kids = children
        elif widen_alpha is not None and kids < visits ** widen_alpha:
            kids += 1
    return kids


MCTS_CASES = {
    "prm-choose-value": {"evaluate": "prm", "choose": "value"},
    "value-widening": {"evaluate": "value", "widen_alpha": 0.5, "children": 1},
    "rollout": {"evaluate": "rollout"},
}


@pytest.mark.parametrize("case", list(MCTS_CASES))
def test_mcts_visit_counts_and_leaf_evaluation(engine, problems, case):
    from rewards.catalog import load_value

    options = MCTS_CASES[case]
    evaluate, children, alpha = options["evaluate"], options.get("children", 3), options.get("widen_alpha")
    choose = options.get("choose", "visits")
    prm = load_prm("arith")
    value = load_value("arith") if evaluate == "value" else None
    qs = [p.question for p in problems[: 3 if evaluate == "rollout" else 6]]  # rollouts are the costly case
    results = solve_many(engine, qs, strategy="mcts", budget=6, prm=prm, value=value, seed=4, **options)
    other_choice = 0
    for r in results:
        sims = r.info["simulations"]
        assert sims == 6 and r.info["evaluate"] == evaluate
        root = r.tree.root
        assert root.extra["mcts"]["N"] == sims  # every simulation visits the root once
        assert len([c for c in root.children if "mcts" in c.extra]) == _root_children(sims, children, alpha)
        for node in r.tree:
            if "mcts" not in node.extra:
                continue
            stats = node.extra["mcts"]
            kids = [c for c in node.children if "mcts" in c.extra]
            # A new child is visited once with its own leaf value; each simulation through a node
            # adds one visit and the value backed up: the best leaf value of the children its
            # expansion made (a terminal's own Q when it ended on one).
            own = 0 if node.is_root else 1
            v = 0.0 if node.is_root else _mcts_leaf_value(node, evaluate, value.name if value else "")
            if node.finish_reason == "eos":
                assert not kids and stats["N"] >= 1 and stats["W"] == pytest.approx(stats["N"] * v)
            elif not kids:
                assert stats["N"] == own and stats["W"] == pytest.approx(v)
            else:
                leaf = {c: _mcts_leaf_value(c, evaluate, value.name if value else "") for c in kids}
                batches = [kids[:children]] + [[c] for c in kids[children:]]  # widening adds one at a time
                assert stats["N"] == own + len(batches) + sum(c.extra["mcts"]["N"] - 1 for c in kids)
                assert stats["W"] == pytest.approx(own * v + sum(max(leaf[c] for c in b) for b in batches)
                                                   + sum(c.extra["mcts"]["W"] - leaf[c] for c in kids))
                if alpha is None:
                    assert len(kids) == children
                else:  # a node widens only while #children < N ** alpha
                    assert len(kids) <= max(children, math.ceil(max(1, stats["N"] - 1) ** alpha))
                # Priors: softmax over siblings of the mean token logprob.
                means = {c: sum(c.logprobs) / len(c.logprobs) for c in kids}
                total = sum(math.exp(m) for m in means.values())
                for c in kids:
                    assert c.extra["mcts"]["P"] == pytest.approx(math.exp(means[c]) / total)
        pick = _mcts_pick(r.tree, choose)
        if pick.finish_reason != "eos":  # nothing finished: the reached leaf was completed greedily
            done = [c for c in pick.children if "mcts" not in c.extra and "rollout_of" not in c.extra]
            assert len(done) == 1, "the search completed another leaf"
            pick = done[0]
        assert r.text == r.tree.text(pick)
        other_choice += _mcts_pick(r.tree, choose) is not _mcts_pick(r.tree, "value" if choose == "visits" else "visits")
        assert r.ledger.prefill_tokens == r.ledger.prompt_tokens
        if evaluate == "value":
            assert r.ledger.value_calls > 0
        if evaluate == "rollout":
            assert any("rollout_of" in n.extra for n in r.tree)
    if choose == "value":
        assert other_choice  # the most visited path would have answered differently somewhere


def test_first_finish_cancels_the_rest(engine, problems):
    qs = [p.question for p in problems[:8]]
    full = solve_many(engine, qs, strategy="best_of_n", budget=8, select="majority", seed=6)
    fast = solve_many(engine, qs, strategy="first_finish", budget=8, seed=6)
    for r, ref in zip(fast, full):
        winners = [r.tree.node(c.node_id) for c in r.candidates]
        length = len(winners[0].token_ids)
        assert all(len(w.token_ids) == length for w in winners)  # all finished on the same step
        assert len(r.tree.root.children) == len(winners) <= 8  # cancelled sequences made no nodes
        # Lockstep decoding: each of the 8 sequences decoded exactly as many tokens as the winner.
        assert r.ledger.generated_tokens == 8 * length
        # Same seeds as best-of-N: the winners are best-of-N's shortest samples.
        shortest = min(len(c.text) for c in ref.candidates)
        assert len(r.text) == shortest
    assert sum(r.ledger.generated_tokens for r in fast) < sum(r.ledger.generated_tokens for r in full)
    voted = solve_many(engine, qs, strategy="first_finish", budget=8, k=3, seed=6)
    assert all(r.info["k"] == 3 and len(r.candidates) >= 3 for r in voted)
    with pytest.raises(ReasonError, match="^k:"):
        solve(engine, qs[0], strategy="first_finish", budget=2, k=5)
