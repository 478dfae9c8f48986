"""A*-decoding over steps: always expand the open node with the lowest ``f = g + h``.

``h = 1 - score`` with the PRM's score of the node's path (aggregation ``last``); ``g`` is pluggable
and by default the accumulated score drops along the path (``g(child) = g(parent) + max(0,
score(parent) - score(child))``, the root scoring 1). Each expansion samples ``k`` next steps. The
search stops at the first finished (EOS) node popped, or after ``max_expansions`` expansions
(default: the budget ``n``) or a budget cap; then the finished node with the lowest ``f`` is the
answer, or, with none, the lowest-``f`` open node completed greedily.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Delimiter, Positive, StrategyOptions, Temperature


def score_drops(parent_g: float, parent_score: float, child_score: float) -> float:
    """The default ``g``: how much the path's score has fallen so far."""
    return parent_g + max(0.0, parent_score - child_score)


class AStarOptions(StrategyOptions):
    """``astar``: the step delimiter, next steps per expansion (``k``), temperature, the expansion
    cap (default: the budget ``n``), the path cost ``g(parent_g, parent_score, child_score)`` and
    the token cap per step."""

    delimiter: Delimiter = "\n\n"
    k: Positive = 4
    temperature: Temperature = 0.8
    max_expansions: Positive | None = None
    g: Callable[[float, float, float], float] = score_drops
    step_tokens: Positive = 256


@strategies.register("astar", options=AStarOptions)
async def astar(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                delimiter: str = "\n\n", k: int = 4, temperature: float = 0.8, max_expansions: int | None = None,
                g: Callable[[float, float, float], float] = score_drops, step_tokens: int = 256):
    """A*-decoding (see the module docstring)."""
    if ctx.prm is None:
        raise ReasonError("prm", "astar needs a PRM for its heuristic", "pass --prm NAME[=PATH]")
    limit = max_expansions or budget.n
    step = Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))
    root = ctx.tree.root
    state: dict[Node, tuple[float, float]] = {root: (0.0, 1.0)}  # node -> (g, score)
    # Ties in f go to the deeper node (then the older one): with an exact heuristic A* dives.
    heap: list[tuple[float, int, int, Node]] = [(0.0, 0, root.id, root)]
    popped: list[tuple[float, float]] = []  # (f popped, lowest f still open)
    goal: Node | None = None
    expansions = 0
    while heap:
        f, _, _, node = heapq.heappop(heap)
        popped.append((f, heap[0][0] if heap else f))
        node.extra["astar_f"] = f
        if node.finished:
            goal = node
            break
        if expansions >= limit or budget.exhausted(ctx.tree, ctx.started):
            heapq.heappush(heap, (f, -node.depth, node.id, node))
            popped.pop()
            break
        children = await ctx.expand(node, k, step, Sampling(temperature=temperature))
        expansions += 1
        scores = await ctx.score(children)
        g_parent, s_parent = state[node]
        for child, s in zip(children, scores):
            g_child = g(g_parent, s_parent, s)
            state[child] = (g_child, s)
            heapq.heappush(heap, (g_child + (1.0 - s), -child.depth, child.id, child))
    if goal is None:
        done = sorted(entry for entry in heap if entry[3].finished)
        if done:
            goal = done[0][3]
        else:
            best = min(heap)[3] if heap else root
            goal = (await ctx.expand(best, 1, final, Sampling(temperature=0.0)))[0]
    pool = [n for n in state if n.finished]
    if goal not in pool:
        pool.append(goal)
    scores = await ctx.score(pool)
    return finish(ctx, "astar", pool, list(scores), pool.index(goal), extract, expansions=expansions, popped=popped)
