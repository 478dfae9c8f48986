"""greedy, sample and best_of_n end to end on the bundled arith model (held-out level-3 problems)."""

from __future__ import annotations

from collections import Counter

import pytest

from reason.core.engine.hf import HFEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
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


def correct(results, problems):
    return sum(r.answer == str(p.answer) for r, p in zip(results, problems))


def test_best_of_n_invariants_and_selection(engine, problems):
    prm = load_prm("arith")
    qs = [p.question for p in problems]
    by_prm = solve_many(engine, qs, strategy="best_of_n", budget=8, prm=prm, seed=1)
    by_vote = solve_many(engine, qs, strategy="best_of_n", budget=8, prm=None, select="majority", seed=1)
    greedy = solve_many(engine, qs, strategy="greedy", budget=1)
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


def test_beam_and_dvts_invariants(engine, problems):
    prm = load_prm("arith")
    qs = [p.question for p in problems]
    beams = solve_many(engine, qs, strategy="beam", budget=8, prm=prm, width=4, seed=2)
    trees = solve_many(engine, qs, strategy="dvts", budget=8, prm=prm, width=4, seed=2)
    greedy = solve_many(engine, qs, strategy="greedy", budget=1)
    for r in beams:
        assert r.info["kept_per_step"] and all(k <= 8 // 4 for k in r.info["kept_per_step"])
        # Every kept beam was expanded into exactly `width` children, and the root into N.
        assert len(r.tree.root.children) == 8
        for node in r.tree:
            assert len(node.children) in (0, 4) or node.is_root
        best = max(r.candidates, key=lambda c: c.score)
        assert r.answer == best.answer
        assert r.ledger.prefill_tokens == r.ledger.prompt_tokens
    for r in trees:
        assert r.info["subtrees"] == 2
        assert len(r.tree.root.children) == 2 * 4  # each subtree's first expansion hangs off the root
        assert len(r.candidates) <= 2
    assert correct(beams, problems) > correct(greedy, problems)
    assert correct(trees, problems) > correct(greedy, problems)


@pytest.mark.parametrize("evaluate", ["prm", "value", "rollout"])
def test_mcts_visit_counts_and_leaf_evaluation(engine, problems, evaluate):
    from rewards.catalog import load_value

    prm = load_prm("arith")
    value = load_value("arith") if evaluate == "value" else None
    qs = [p.question for p in problems[:6]]
    results = solve_many(engine, qs, strategy="mcts", budget=6, prm=prm, value=value, evaluate=evaluate, seed=4)
    for r in results:
        sims = r.info["simulations"]
        assert sims == 6 and r.info["evaluate"] == evaluate
        root = r.tree.root
        assert root.extra["mcts"]["N"] == sims  # every simulation visits the root once
        for node in r.tree:
            if "mcts" not in node.extra:
                continue
            kids = [c for c in node.children if "mcts" in c.extra]
            assert node.extra["mcts"]["N"] >= sum(c.extra["mcts"]["N"] for c in kids) - len(kids)
            assert 0.0 <= node.extra["mcts"]["P"] <= 1.0
        priors = [c.extra["mcts"]["P"] for c in root.children if "mcts" in c.extra]
        assert abs(sum(priors) - 1.0) < 1e-6
        assert r.text and r.ledger.prefill_tokens == r.ledger.prompt_tokens
        if evaluate == "value":
            assert r.ledger.value_calls > 0
        if evaluate == "rollout":
            assert any("rollout_of" in n.extra for n in r.tree)


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


def test_astar_pops_in_f_order(engine, problems):
    prm = load_prm("arith")
    qs = [p.question for p in problems]
    results = solve_many(engine, qs, strategy="astar", budget=8, prm=prm, k=4, seed=8)
    best_of_n = solve_many(engine, qs, strategy="best_of_n", budget=8, prm=prm, seed=8)
    for r in results:
        assert r.info["expansions"] <= 8
        for f, lowest_open in r.info["popped"]:
            assert f <= lowest_open + 1e-12  # nothing cheaper was waiting
        chosen = r.tree.node(next(c.node_id for c in r.candidates if c.text == r.text))
        assert chosen.finish_reason == "eos"
        assert r.ledger.prefill_tokens == r.ledger.prompt_tokens
    assert correct(results, problems) >= correct(best_of_n, problems) - 1
    assert sum(r.ledger.generated_tokens for r in results) < sum(r.ledger.generated_tokens for r in best_of_n)


@pytest.mark.parametrize("strategy", ["particle", "epf"])
def test_particle_weights_normalise(engine, problems, strategy):
    prm = load_prm("arith")
    qs = [p.question for p in problems[:8]]
    results = solve_many(engine, qs, strategy=strategy, budget=8, prm=prm, seed=9)
    for r in results:
        assert r.info["particles"] == 8
        assert r.info["history"]
        for h in r.info["history"]:
            assert abs(h["weight_sum"] - 1.0) < 1e-9 and 1.0 <= h["ess"] <= 8.0 + 1e-9
        assert r.ledger.prefill_tokens == r.ledger.prompt_tokens
        if strategy == "epf":
            assert r.ledger.generated_tokens > 0
    again = solve_many(engine, qs, strategy=strategy, budget=8, prm=prm, seed=9)
    assert [r.text for r in again] == [r.text for r in results]


def test_resampling_schemes():
    import random

    from search.particle import resample, softmax_weights

    w = softmax_weights([0.9, 0.5, 0.1], 1.0)
    assert abs(sum(w) - 1.0) < 1e-12 and w[0] > w[1] > w[2]
    rng = random.Random(0)
    sys_picks = resample(w, 1000, rng.random, "systematic")
    assert abs(sys_picks.count(0) / 1000 - w[0]) < 0.01  # systematic: within 1/N of the weight
    multi = resample(w, 20000, rng.random, "multinomial")
    assert abs(multi.count(0) / 20000 - w[0]) < 0.02
    with pytest.raises(ReasonError, match="^resampling:"):
        resample(w, 3, rng.random, "stratified-ish")


def test_particle_gibbs_keeps_its_reference(engine, problems):
    prm = load_prm("arith")
    qs = [p.question for p in problems[:6]]
    results = solve_many(engine, qs, strategy="particle", budget=8, prm=prm, seed=4, iterations=2)
    for r in results:
        assert r.info["particles"] == 4 and r.info["iterations"] == 2
        assert {h["iteration"] for h in r.info["history"]} == {0, 1}
        [ref] = r.info["references"]
        # The conditional sweep carries the reference path to its end: it is among the final particles.
        assert ref in [c.node_id for c in r.candidates]
        assert r.tree.node(ref).finish_reason == "eos"
    with pytest.raises(ReasonError, match="^iterations:"):
        solve_many(engine, qs[:1], strategy="particle", budget=8, prm=prm, iterations=8)
