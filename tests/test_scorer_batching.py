"""Scorer calls of many problems searched at once share batches (the runner gathers them)."""

from __future__ import annotations


from reason.shortcuts import solve_many
from tasks.arith.problems import generate
from tasks.arith.scorers import ArithPRM


class CountingPRM(ArithPRM):
    """The exact arith PRM, counting the batches it is asked to score."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.items = 0

    def score_batch(self, items):
        self.calls += 1
        self.items += len(items)
        return super().score_batch(items)


def test_32_problems_share_prm_calls_with_the_same_scores(engine):
    strategy = "beam"
    questions = [p.question for p in generate(3, 32, seed=5)]
    together_prm, alone_prm = CountingPRM(), CountingPRM()
    together = solve_many(engine, questions, strategy=strategy, budget=4, prm=together_prm, seed=0)
    alone = [solve_many(engine, [q], strategy=strategy, budget=4, prm=alone_prm, seed=i)[0]
             for i, q in enumerate(questions)]
    # Same trees, same scores: batching changes only how the calls are grouped (logprobs of a
    # batched forward may differ from a lone one in the last float bits, so tokens are compared).
    shape = lambda r: [(n.id, n.parent.id if n.parent else None, n.token_ids, n.scores) for n in r.tree]
    for a, b in zip(together, alone):
        assert shape(a) == shape(b)
        assert [c.score for c in a.candidates] == [c.score for c in b.candidates]
    assert together_prm.items == alone_prm.items
    assert together_prm.calls * 8 <= alone_prm.calls
    # Each problem's ledger counts the calls it took part in: alone, every call is its own.
    assert sum(r.ledger.prm_batches for r in alone) == alone_prm.calls
    assert all(r.ledger.prm_batches <= together_prm.calls for r in together)
