"""Monte Carlo tree search over steps (PUCT), with the leaf evaluated by a value model, a PRM, or a
rollout to the end.

Each simulation walks from the root by PUCT, ``Q(c) + c_puct * P(c) * sqrt(N(parent)) / (1 + N(c))``,
to a node not yet expanded, gives it ``children`` sampled next steps (or, with ``widen_alpha``,
progressive widening: a visited node gains a child while ``#children < N(node) ** widen_alpha``),
evaluates the new children, and backs the best child's value up the path. ``P`` is the policy prior:
the softmax over siblings of each step's mean token logprob. Unvisited children start at the parent's
``Q`` (first-play urgency).

Leaf evaluation (``evaluate``):

* ``value``: the value model's estimate of the child's prefix (``--value``; MCTS with value models);
* ``prm``: the PRM's aggregated score of the child's steps;
* ``rollout``: one sampled completion from the child to the end, scored by the PRM.

A child that ended at EOS is terminal; its value is its PRM score and it is never expanded. The final
answer follows the most visited children from the root (``choose="visits"``) or the highest ``Q``
(``"value"``) to a terminal node; when that path stops short, the terminal node with the best ``Q``
is taken, and with none at all the reached leaf is completed greedily. Statistics live in
``node.extra`` (``N``, ``W``, ``P``), so the saved tree shows the search.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import Delimiter, Positive, PositiveFloat, StrategyOptions, Temperature

Evaluation = Literal["value", "prm", "rollout"]
Choice = Literal["visits", "value"]


class MCTSOptions(StrategyOptions):
    """``mcts``: the step delimiter, the leaf evaluation (default: ``value`` with a value model,
    else ``prm``), simulations (default: the budget ``n``), children per expansion, progressive
    widening's exponent, the PUCT constant, temperature, the final choice and the token cap per step."""

    delimiter: Delimiter = "\n\n"
    evaluate: Evaluation | None = None
    simulations: Positive | None = None
    children: Positive = 3
    widen_alpha: PositiveFloat | None = None
    c_puct: Annotated[float, Field(ge=0.0, strict=True)] = 1.5
    temperature: Temperature = 0.8
    choose: Choice = "visits"
    step_tokens: Positive = 256


def _stats(node: Node) -> dict:
    return node.extra.setdefault("mcts", {"N": 0, "W": 0.0, "P": 1.0})


def _q(node: Node, default: float) -> float:
    s = _stats(node)
    return s["W"] / s["N"] if s["N"] else default


def _priors(children: list[Node]) -> None:
    means = [sum(c.logprobs) / max(1, len(c.logprobs)) for c in children]
    top = max(means)
    weights = [math.exp(m - top) for m in means]
    total = sum(weights)
    for c, w in zip(children, weights):
        _stats(c)["P"] = w / total


@strategies.register("mcts", options=MCTSOptions)
async def mcts(
    ctx: SearchContext,
    budget: Budget,
    *,
    extract: Callable[[str], str | None],
    final: Stop,
    delimiter: str = "\n\n",
    evaluate: Evaluation | None = None,
    simulations: int | None = None,
    children: int = 3,
    widen_alpha: float | None = None,
    c_puct: float = 1.5,
    temperature: float = 0.8,
    choose: Choice = "visits",
    step_tokens: int = 256,
):
    """PUCT search (see the module docstring); ``simulations`` defaults to ``budget.n``."""
    evaluate = evaluate or ("value" if ctx.value is not None else "prm")
    if ctx.prm is None:
        raise ReasonError("prm", "mcts scores terminal steps with a PRM", "pass --prm NAME[=PATH]")
    if evaluate == "value" and ctx.value is None:
        raise ReasonError("value", "evaluate='value' needs a value model", "pass --value NAME[=PATH]")
    sims = simulations or budget.n
    step = Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))
    sample = Sampling(temperature=temperature)
    root = ctx.tree.root
    _stats(root)

    async def leaf_values(nodes: list[Node]) -> list[float]:
        done = [n for n in nodes if n.finished]
        open_ = [n for n in nodes if not n.finished]
        values: dict[Node, float] = {}
        if done:
            values.update(zip(done, await ctx.score(done)))
        if open_:
            if evaluate == "value":
                values.update(zip(open_, await ctx.values(open_)))
            elif evaluate == "prm":
                values.update(zip(open_, await ctx.score(open_)))
            else:
                ends = [(await ctx.expand(n, 1, final, sample))[0] for n in open_]
                scores = await ctx.score(ends)
                for n, end, s in zip(open_, ends, scores):
                    end.extra["rollout_of"] = n.id
                    values[n] = s
        return [values[n] for n in nodes]

    def expandable(node: Node) -> bool:
        if node.finished or node.extra.get("rollout_of") is not None:
            return False
        kids = [c for c in node.children if "mcts" in c.extra]
        if not kids:
            return True
        return widen_alpha is not None and len(kids) < max(1, _stats(node)["N"]) ** widen_alpha

    def select(node: Node) -> Node:
        kids = [c for c in node.children if "mcts" in c.extra]
        parent_n = _stats(node)["N"]
        parent_q = _q(node, 0.0)
        return max(
            kids,
            key=lambda c: _q(c, parent_q) + c_puct * _stats(c)["P"] * math.sqrt(max(1, parent_n)) / (1 + _stats(c)["N"]),
        )

    ran = 0
    for _ in range(sims):
        if budget.exhausted(ctx.tree, ctx.started):
            break
        path = [root]
        node = root
        while not expandable(node) and not node.finished:
            node = select(node)
            path.append(node)
        if node.finished:
            value = _q(node, (await ctx.score([node]))[0])
        else:
            widen = widen_alpha is not None and any("mcts" in c.extra for c in node.children)
            new = await ctx.expand(node, 1 if widen else children, step, sample)
            for c in new:
                _stats(c)
            _priors([c for c in node.children if "mcts" in c.extra])
            vals = await leaf_values(new)
            for c, v in zip(new, vals):
                s = _stats(c)
                s["N"] += 1
                s["W"] += v
            value = max(vals)
        for p in path:
            s = _stats(p)
            s["N"] += 1
            s["W"] += value
        ran += 1

    # Final choice.
    key = (lambda c: _stats(c)["N"]) if choose == "visits" else (lambda c: _q(c, -1.0))
    node = root
    while True:
        kids = [c for c in node.children if "mcts" in c.extra]
        if not kids:
            break
        node = max(kids, key=lambda c: (key(c), -c.id))
    terminals = [n for n in ctx.tree if "mcts" in n.extra and n.finished]
    if not node.finished:
        if terminals:
            node = max(terminals, key=lambda n: (_q(n, -1.0), -n.id))
        else:
            node = (await ctx.expand(node, 1, final, Sampling(temperature=0.0)))[0]
            terminals = [node]
    pool = terminals if node in terminals else terminals + [node]
    scores = await ctx.score(pool)
    return finish(ctx, "mcts", pool, list(scores), pool.index(node), extract, simulations=ran, evaluate=evaluate)
