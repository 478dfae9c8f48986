"""Strategy options that change what a search does: best-of-N's weighted vote, checked against a
recomputation from the recorded candidates (bundled arith model; beam look-ahead is checked in
tests/test_search_beam.py)."""

from __future__ import annotations

from collections import defaultdict


from rewards.catalog import load_prm
from reason.shortcuts import solve_many
from tasks.registry import get_domain

DELIMITER = get_domain("arith").delimiter


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
            if c.answer is not None:  # a merged candidate votes once per sample it stands for
                summed[c.answer] += c.score * c.count
                counts[c.answer] += c.count
        assert summed, "every problem here has at least one extracted answer"
        assert r.answer == _first_max(answers, summed)
        top = max(r.candidates, key=lambda c: c.score)
        differs_from_top += r.answer != top.answer
        differs_from_majority += r.answer != _first_max(answers, counts)
    # The three rules disagree on some of these problems, so a weighted vote that fell back to
    # either of the others would be caught above.
    assert differs_from_top and differs_from_majority
