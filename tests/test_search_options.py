"""Strategy options that change what a search does: best-of-N's weighted vote and beam look-ahead,
checked against a recomputation from the recorded candidates and tree (bundled arith model)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model
from reason.core.tree import Node
from rewards.catalog import load_prm
from rewards.scoring import question_of, split_steps
from reason.shortcuts import solve_many
from tasks.arith.problems import generate
from tasks.registry import get_domain

DELIMITER = get_domain("arith").delimiter


@pytest.fixture(scope="module")
def engine():
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def problems():
    return generate(3, 16, seed=11)


def _first_max(answers: list[str | None], weight: dict[str, float]) -> str:
    """The answer with the largest weight; ties go to the answer seen first."""
    return max(weight, key=lambda a: (weight[a], -answers.index(a)))


def test_best_of_n_weighted_vote_sums_scores(engine, problems):
    # A soft PRM (wrong steps still score 0.3): a frequent wrong answer can outweigh a single
    # correct one, so the summed vote, the top score and the plain majority pick differently.
    prm = load_prm("arith", low=0.3)
    results = solve_many(engine, [p.question for p in problems[:9]], strategy="best_of_n", budget=8, prm=prm,
                         select="weighted", seed=1)
    differs_from_top = differs_from_majority = 0
    for r in results:
        answers = [c.answer for c in r.candidates]
        summed: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)
        for c in r.candidates:
            assert c.score is not None and 0.3 <= c.score <= 1.0
            if c.answer is not None:
                summed[c.answer] += c.score
                counts[c.answer] += 1
        assert summed, "every problem here has at least one extracted answer"
        assert r.answer == _first_max(answers, summed)
        top = max(r.candidates, key=lambda c: c.score)
        differs_from_top += r.answer != top.answer
        differs_from_majority += r.answer != _first_max(answers, counts)
    # The three rules disagree on some of these problems, so a weighted vote that fell back to
    # either of the others would be caught above.
    assert differs_from_top and differs_from_majority


def _levels(root: Node) -> list[list[Node]]:
    """The candidates look-ahead beam search considered at each step, rebuilt from the tree: a
    scored candidate's first child (lowest id, made first) is its greedy look-ahead step; the rest
    are the sampled children of a kept beam, the next step's candidates."""
    levels = [list(root.children)]
    while True:
        nxt = [c for node in levels[-1] for c in node.children[1:]]
        if not nxt:
            return levels
        levels.append(nxt)


def test_beam_lookahead_ranks_by_the_step_after(engine, problems):
    prm = load_prm("arith")
    width, n = 4, 8
    results = solve_many(engine, [p.question for p in problems[:6]], strategy="beam", budget=n, prm=prm,
                         width=width, lookahead=1, seed=2)
    decided_by_lookahead = 0
    for r in results:
        question = question_of(r.tree)
        levels = _levels(r.tree.root)
        assert len(levels[0]) == n
        kept_per_step = []
        for level in levels:
            live = [c for c in level if c.finish_reason != "eos"]
            kept = [c for c in live if len(c.children) > 1]
            if not kept:
                continue
            kept_per_step.append(len(kept))
            assert len(kept) == min(n // width, len(live))
            # Every live candidate got exactly one greedy look-ahead step; kept ones also `width`
            # sampled children. The look-ahead step, not the candidate itself, was scored.
            assert all(len(c.children) == (width + 1 if c in kept else 1) for c in live)
            assert not any("arith" in c.scores for c in live)
            ahead = {c: c.children[0].scores["arith"] for c in live}
            dropped = [c for c in live if c not in kept]
            if dropped:
                assert min(ahead[c] for c in kept) >= max(ahead[c] for c in dropped)
                own = {c: prm.score(question, split_steps(r.tree.text(c), DELIMITER))[-1] for c in live}
                decided_by_lookahead += min(own[c] for c in kept) < max(own[c] for c in dropped)
        assert r.info["kept_per_step"] == kept_per_step
    # Some kept beam scored worse on its own than one dropped: ranking by the candidates' own
    # scores would have kept others.
    assert decided_by_lookahead
