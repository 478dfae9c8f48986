"""greedy, sample and best_of_n end to end on the bundled arith model (held-out level-3 problems)."""

from __future__ import annotations

from collections import Counter

import pytest

from reason.core.errors import ReasonError
from rewards.catalog import load_prm
from search.budget import Budget
from reason.shortcuts import solve, solve_many


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
        assert sum(c.count for c in r_prm.candidates) == 8  # identical samples: one candidate, counted
        scores = [c.score for c in r_prm.candidates]
        assert r_prm.answer == r_prm.candidates[scores.index(max(scores))].answer
        # Same seed, same samples: the vote sees the same candidates.
        assert [c.text for c in r_vote.candidates] == [c.text for c in r_prm.candidates]
        counts: Counter = Counter()
        for c in r_vote.candidates:
            if c.answer is not None:
                counts[c.answer] += c.count
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
    assert all(r.info["k"] == 3 and sum(c.count for c in r.candidates) >= 3 for r in voted)
    with pytest.raises(ReasonError, match="^k:"):
        solve(engine, qs[0], strategy="first_finish", budget=2, k=5)
