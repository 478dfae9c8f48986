"""Metrics from one run: pass@k, votes at k with groups kept whole, bootstrap intervals."""

from __future__ import annotations

import random
from math import comb

import pytest

from tasks.evaluation import CandidateRecord, EvalRecord
from tasks.metrics import (
    at_k,
    bootstrap_ci,
    breakdown,
    ks_up_to,
    pass_at_k,
    subsample,
    summarize,
    vote,
)


def cand(answer, correct, score=None):
    return CandidateRecord(answer=answer, score=score, correct=correct)


def record(pid, budget, cands, correct, level=1, tokens=10, subject=None):
    return EvalRecord(id=pid, index=0, budget=budget, label="x", answer=None, gold="", correct=correct, candidates=cands,
                      ledger={"generated_tokens": tokens, "prm_calls": 1}, seed=0, config_hash="h", level=level,
                      subject=subject)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - comb(7, 4) / comb(10, 4))
    # The estimator is the mean over all k-subsets of "some subset member is correct".
    rng = random.Random(0)
    flags = [True, False, False, True, False, False]
    hits = sum(any(rng.sample(flags, 3)) for _ in range(20000)) / 20000
    assert hits == pytest.approx(pass_at_k(6, 2, 3), abs=0.01)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_votes_and_ties():
    cands = [cand("1", False, 0.9), cand("2", True, 0.2), cand("2", True, 0.3), cand(None, False, 1.0)]
    assert vote(cands, weighted=False) is True  # "2" has two votes
    assert vote(cands, weighted=True) is False  # "1" sums 0.9, "2" only 0.5
    assert vote([cand("1", False, 0.9), cand("2", True, 0.2)], weighted=True) is False
    assert vote([cand("1", False), cand("2", True)], weighted=False) is False  # tie: the first seen wins
    assert vote([cand(None, True)], weighted=False) is False


def test_subsample_keeps_groups_whole():
    cands = [cand(str(i), False) for i in range(8)]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    rng = random.Random(1)
    for _ in range(50):
        pick = subsample(cands, 4, rng, groups)
        ids = sorted(groups[int(c.answer)] for c in pick)
        assert len(pick) == 4 and ids[0] == ids[1] and ids[2] == ids[3]
    assert ks_up_to(16) == [1, 2, 4, 8, 16] and ks_up_to(6) == [1, 2, 4, 6]


def test_at_k_summary_and_breakdown():
    # "a": the majority and the summed scores both pick "1" (right); "b": the majority picks "5"
    # (wrong), the scores pick "6" (right).
    recs = [
        record("a", 4, [cand("1", True, 0.5), cand("1", True, 0.5), cand("2", False, 0.9), cand("3", False, 0.0)], True,
               level=1, subject="Algebra"),
        record("b", 4, [cand("5", False, 0.1), cand("5", False, 0.1), cand("6", True, 0.9), cand("7", False, 0.0)],
               False, level=2, tokens=30, subject="Algebra"),
    ]
    full = at_k(recs, 4)
    assert full == {"majority": 0.5, "weighted": 1.0, "pass": 1.0}
    one = at_k(recs, 1)
    assert one["pass"] == pytest.approx((0.5 + 0.25) / 2)
    [row] = summarize(recs)
    assert row["accuracy"] == 0.5 and row["problems"] == 2 and row["tokens"] == 20 and row["prm_calls"] == 1
    assert (row["majority"], row["weighted"], row["pass"]) == (0.5, 1.0, 1.0)
    lo, hi = row["ci"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    parts = breakdown(recs, "level")
    assert parts.keys() == {(4, 1), (4, 2)}
    assert parts[(4, 1)]["accuracy"] == 1.0 and parts[(4, 2)]["accuracy"] == 0.0
    subjects = breakdown(recs, "subject")
    assert subjects.keys() == {(4, "Algebra")} and subjects[(4, "Algebra")]["accuracy"] == 0.5


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    vals = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(vals, seed=3)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert bootstrap_ci(vals, seed=3) == (lo, hi)
