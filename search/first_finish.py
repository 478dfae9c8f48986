"""First-finish search: ``N`` solutions decoded together; the first to finish wins and the rest are
cancelled at once, so no token is spent after the winner is known. ``k > 1`` is FFS-k@N: a majority
vote over the first ``k`` to finish (ties go to the earliest).

Identical finishers are one merged node listed once per sample, so a solution that finished twice
among the first ``k`` has two votes (and its candidate a count of two). Under a token budget too
small to give every sample a token, nothing is sampled and the result has no answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Positive, StrategyOptions, Temperature


class FirstFinishOptions(StrategyOptions):
    """``first_finish``: how many finishers vote (``k``, at most the budget) and the temperature."""

    k: Positive = 1
    temperature: Temperature = 0.8


@strategies.register("first_finish", options=FirstFinishOptions)
async def first_finish(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                       k: int = 1, temperature: float = 0.8):
    """First-finish search (see the module docstring)."""
    if not 1 <= k <= budget.n:
        raise ReasonError("k", f"must be between 1 and the budget {budget.n} (got {k})", "lower k")
    nodes = await ctx.expand(ctx.tree.root, budget.n, final, Sampling(temperature=temperature), first=k)
    if not nodes:  # the token budget allows no sample
        return finish(ctx, "first_finish", [], [], 0, extract, k=k, finished=0)
    # Shorter finished first (all sequences decode in lockstep), then by index.
    nodes.sort(key=lambda n: (len(n.token_ids), n.id))
    answers = [extract(ctx.tree.text(n)) for n in nodes]
    votes = Counter(a for a in answers[:k] if a is not None)
    chosen = answers.index(max(votes, key=lambda a: (votes[a], -answers.index(a)))) if votes else 0
    return finish(ctx, "first_finish", nodes, [None] * len(nodes), chosen, extract, k=k, finished=len(nodes))
