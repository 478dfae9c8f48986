"""Step-level beam search and diverse verifier tree search (DVTS).

Both grow the tree one step (up to the suite's step delimiter) at a time and let the PRM choose:

* ``beam``: the root gets ``N`` first steps; every iteration keeps the ``N // M`` best unfinished
  steps by PRM score and gives each ``M`` children, so about ``N`` sequences are alive per step.
  ``lookahead`` (default 0) scores a kept candidate after that many extra greedy steps instead.
* ``dvts``: ``N // M`` independent subtrees; each iteration gives every subtree's single beam ``M``
  children and keeps the best one per subtree (diversity across subtrees, greed within).

A child that ends at EOS is finished; the answer is the finished solution with the best PRM score
(the best unfinished one when nothing finished within ``max_steps`` or the budget's caps).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Delimiter, NonNegative, Positive, StrategyOptions, Temperature


class DVTSOptions(StrategyOptions):
    """``dvts``: the step delimiter, children per beam (``width``), temperature, caps on steps and
    on tokens per step."""

    delimiter: Delimiter = "\n\n"
    width: Positive = 4
    temperature: Temperature = 0.8
    max_steps: Positive = 40
    step_tokens: Positive = 256


class BeamOptions(DVTSOptions):
    """``beam``: those of ``dvts`` and the ``lookahead`` depth of scoring."""

    lookahead: NonNegative = 0


def _check(ctx: SearchContext, budget: Budget, width: int) -> int:
    if ctx.prm is None:
        raise ReasonError("prm", "beam search needs a PRM", "pass --prm NAME[=PATH]")
    return max(1, budget.n // width)


async def _grow(ctx: SearchContext, nodes: list[Node], n: int, step: Stop, temperature: float) -> list[list[Node]]:
    return list(await asyncio.gather(*(ctx.expand(x, n, step, Sampling(temperature=temperature)) for x in nodes)))


async def _lookahead_scores(ctx: SearchContext, nodes: list[Node], depth: int, step: Stop) -> list[float]:
    if depth <= 0:
        return await ctx.score(nodes)
    ends = list(nodes)
    for _ in range(depth):
        live = [i for i, x in enumerate(ends) if not x.finished]
        if not live:
            break
        grown = await _grow(ctx, [ends[i] for i in live], 1, step, 0.0)
        for i, kids in zip(live, grown):
            ends[i] = kids[0]
    return await ctx.score(ends)


async def _result(ctx: SearchContext, name: str, finished: list[Node], active: list[Node],
                  extract: Callable[[str], str | None], **info: object):
    pool = finished or active
    scores = await ctx.score(pool) if pool else []
    chosen = max(range(len(pool)), key=lambda i: (scores[i], -i)) if pool else 0
    return finish(ctx, name, pool, list(scores), chosen, extract, **info)


def _step_stop(delimiter: str, final: Stop, step_tokens: int) -> Stop:
    return Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))


@strategies.register("beam", options=BeamOptions)
async def beam(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
               delimiter: str = "\n\n", width: int = 4, temperature: float = 0.8, lookahead: int = 0,
               max_steps: int = 40, step_tokens: int = 256):
    """Step-level beam search (see the module docstring)."""
    keep = _check(ctx, budget, width)
    step = _step_stop(delimiter, final, step_tokens)
    finished: list[Node] = []
    kept_per_step: list[int] = []
    candidates = (await _grow(ctx, [ctx.tree.root], budget.n, step, temperature))[0]
    active: list[Node] = []
    for _ in range(max_steps):
        finished += [c for c in candidates if c.finished]
        live = [c for c in candidates if not c.finished]
        if not live or len(finished) >= budget.n or budget.exhausted(ctx.tree, ctx.started):
            active = live
            break
        scores = await _lookahead_scores(ctx, live, lookahead, step)
        order = sorted(range(len(live)), key=lambda i: (-scores[i], i))[:keep]
        active = [live[i] for i in order]
        kept_per_step.append(len(active))
        candidates = [c for kids in await _grow(ctx, active, width, step, temperature) for c in kids]
    return await _result(ctx, "beam", finished, active, extract, kept_per_step=kept_per_step)


@strategies.register("dvts", options=DVTSOptions)
async def dvts(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
               delimiter: str = "\n\n", width: int = 4, temperature: float = 0.8, max_steps: int = 40,
               step_tokens: int = 256):
    """Diverse verifier tree search (see the module docstring)."""
    subtrees = _check(ctx, budget, width)
    step = _step_stop(delimiter, final, step_tokens)
    beams: list[Node] = [ctx.tree.root] * subtrees
    finished: list[Node] = []
    for _ in range(max_steps):
        live = [i for i, b in enumerate(beams) if b is not None]
        if not live or budget.exhausted(ctx.tree, ctx.started):
            break
        grown = await _grow(ctx, [beams[i] for i in live], width, step, temperature)
        for i, kids in zip(live, grown):
            scores = await ctx.score(kids)
            best = kids[max(range(len(kids)), key=lambda k: (scores[k], -k))]
            if best.finished:
                finished.append(best)
                beams[i] = None
            else:
                beams[i] = best
    return await _result(ctx, "dvts", finished, [b for b in beams if b is not None], extract, subtrees=subtrees)
