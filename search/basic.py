"""Reference strategies and best-of-N.

* ``greedy``: one solution at temperature 0.
* ``sample``: one sampled solution.
* ``best_of_n``: ``budget.n`` solutions sampled together from the root; the answer is chosen by the
  PRM's aggregated score (``select="prm"``), by majority vote over extracted answers
  (``"majority"``), or by PRM-weighted vote (``"weighted"``: each answer's summed scores).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Literal

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.budget import Budget
from search.options import StrategyOptions, Temperature
from search.result import Candidate, SearchResult

Selection = Literal["prm", "majority", "weighted"]


class SampleOptions(StrategyOptions):
    """``sample``: the sampling temperature."""

    temperature: Temperature = 0.8


class BestOfNOptions(SampleOptions):
    """``best_of_n``: the temperature and how the answer is chosen."""

    select: Selection = "prm"


def finish(ctx: SearchContext, name: str, nodes: list[Node], scores: list[float | None], chosen: int,
           extract: Callable[[str], str | None], **info: object) -> SearchResult:
    """Build the result from candidate leaves (``chosen`` indexes the pick in ``nodes``). A node
    may appear several times in ``nodes`` (a merged node standing for several samples, a particle
    with copies): it becomes one candidate whose ``count`` is how many times it appears."""
    tree = ctx.tree
    counts: dict[Node, int] = {}
    first: dict[Node, float | None] = {}
    for n, s in zip(nodes, scores):
        counts[n] = counts.get(n, 0) + 1
        first.setdefault(n, s)
    cands = [Candidate(text=tree.text(n), answer=extract(tree.text(n)), score=first[n], node_id=n.id, count=c)
             for n, c in counts.items()]
    pick = cands[list(counts).index(nodes[chosen])] if cands else None
    return SearchResult(
        strategy=name,
        answer=pick.answer if pick else None,
        text=pick.text if pick else "",
        candidates=cands,
        chosen=pick.node_id if pick else None,
        ledger=tree.ledger.model_copy(),
        tree=tree,
        info=dict(info),
    )


@strategies.register("greedy")
async def greedy(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None],
                 final: Stop) -> SearchResult:
    """One solution at temperature 0."""
    nodes = await ctx.expand(ctx.tree.root, 1, final, Sampling(temperature=0.0))
    return finish(ctx, "greedy", nodes, [None] * len(nodes), 0, extract)


@strategies.register("sample", options=SampleOptions)
async def sample(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                 temperature: float = 0.8) -> SearchResult:
    """One sampled solution."""
    nodes = await ctx.expand(ctx.tree.root, 1, final, Sampling(temperature=temperature))
    return finish(ctx, "sample", nodes, [None] * len(nodes), 0, extract)


@strategies.register("best_of_n", options=BestOfNOptions)
async def best_of_n(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                    temperature: float = 0.8, select: Selection = "prm") -> SearchResult:
    """``budget.n`` sampled solutions; the answer by PRM score, majority or PRM-weighted vote (a
    solution sampled ``k`` times counts ``k`` times in a vote; it is scored once). Under a token
    budget the samples are drawn in waves sized by the mean length so far, so few are cut short."""
    if select != "majority" and ctx.prm is None:
        raise ReasonError("prm", f"best_of_n with select={select!r} needs a PRM", "pass --prm or use select=majority")
    sampling = Sampling(temperature=temperature)
    if ctx.token_budget is None:
        nodes = await ctx.expand(ctx.tree.root, budget.n, final, sampling)
    else:
        nodes = await sample_within_budget(ctx, budget.n, final, sampling)
    if not nodes:
        return finish(ctx, "best_of_n", [], [], 0, extract)
    scores: list[float | None] = list(await ctx.score(nodes)) if select != "majority" else [None] * len(nodes)
    answers = [extract(ctx.tree.text(n)) for n in nodes]
    return finish(ctx, "best_of_n", nodes, scores, choose(answers, scores, select), extract)


async def sample_within_budget(ctx: SearchContext, n: int, stop: Stop, sampling: Sampling) -> list[Node]:
    """Up to ``n`` solutions from the root within the context's token budget: one first, then waves
    of as many as the tokens left allow at the mean length so far."""
    nodes: list[Node] = []
    wave = 1
    while wave > 0:
        before = ctx.tree.ledger.generated_tokens
        got = await ctx.expand(ctx.tree.root, wave, stop, sampling)
        if not got:
            break
        nodes += got
        mean = max(1.0, (ctx.tree.ledger.generated_tokens - before) / len(got))
        wave = min(n - len(nodes), int((ctx.tokens_left or 0) // mean))
    return nodes


def choose(answers: list[str | None], scores: list[float | None], select: Selection) -> int:
    """Index of the pick among candidates: the top score (``"prm"``), the most frequent answer
    (``"majority"``) or the answer with the largest summed score (``"weighted"``); ties go to the
    earliest candidate."""
    if not answers:
        return 0
    if select == "prm":
        return max(range(len(answers)), key=lambda i: (scores[i], -i))
    weight: dict[str, float] = defaultdict(float)
    for a, s in zip(answers, scores):
        if a is not None:
            weight[a] += 1.0 if select == "majority" or s is None else s
    if not weight:
        return 0
    best = max(weight, key=lambda a: (weight[a], -answers.index(a)))
    return answers.index(best)
