"""Particle filtering over steps, with entropic annealing and look-ahead modulation (``epf``).

``N`` particles each advance one step per iteration (particles sharing a node are expanded together,
one child each, sampled at ``temperature``). Every particle is weighted by the softmax of
``logit(PRM score) / weight_temperature`` and
``N`` particles are resampled (``multinomial`` or ``systematic``, from the context's seeded stream).
Finished (EOS) particles stay in the pool with their final weight and are never extended. The
answer is the particle with the highest weight at the end (``select="weight"``) or the weighted vote
over answers (``"vote"``).

Options: ``anneal`` raises the resampling temperature (times ``anneal_factor``, up to
``max_temperature``) whenever the effective sample size falls below ``ess_threshold * N`` within the
first ``anneal_steps`` iterations, so early collapse onto one particle is resisted; ``lookahead``
scores each particle after that many extra greedy steps. The ``epf`` preset turns both on.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from typing import Callable

from reason.context import SearchContext
from reason.engine.base import Sampling, Stop
from reason.errors import ReasonError
from reason.tree import Node
from search import strategies
from search.basic import finish
from search.beam import _lookahead_scores, _step_stop
from search.budget import Budget


def softmax_weights(scores: list[float], temperature: float) -> list[float]:
    """Softmax of ``logit(score) / temperature`` (scores clipped away from 0 and 1)."""
    logits = []
    for s in scores:
        p = min(max(s, 1e-4), 1 - 1e-4)
        logits.append(math.log(p / (1 - p)) / temperature)
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def ess(weights: list[float]) -> float:
    """Effective sample size of normalised weights."""
    return 1.0 / sum(w * w for w in weights)


def resample(weights: list[float], n: int, u: Callable[[], float], how: str) -> list[int]:
    """``n`` indices drawn by ``multinomial`` or ``systematic`` resampling."""
    cdf, acc = [], 0.0
    for w in weights:
        acc += w
        cdf.append(acc)
    cdf[-1] = 1.0
    if how == "systematic":
        start = u() / n
        points = [start + i / n for i in range(n)]
    elif how == "multinomial":
        points = sorted(u() for _ in range(n))
    else:
        raise ReasonError("resampling", f"unknown resampling {how!r}", "use multinomial or systematic")
    out, j = [], 0
    for p in points:
        while cdf[j] < p:
            j += 1
        out.append(j)
    return out


@strategies.register("particle")
async def particle(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                   delimiter: str = "\n\n", weight_temperature: float = 1.0, temperature: float = 0.8,
                   resampling: str = "systematic", anneal: bool = False, anneal_steps: int = 3,
                   ess_threshold: float = 0.5, anneal_factor: float = 2.0, max_temperature: float = 8.0,
                   lookahead: int = 0, select: str = "weight", max_steps: int = 40, step_tokens: int = 256,
                   name: str = "particle", **_: object):
    """Particle filtering (see the module docstring)."""
    if ctx.prm is None:
        raise ReasonError("prm", "particle filtering weights particles with a PRM", "pass --prm NAME[=PATH]")
    if select not in ("weight", "vote"):
        raise ReasonError("select", f"unknown selection {select!r}", "use weight or vote")
    n = budget.n
    step = _step_stop(delimiter, final, step_tokens)
    particles: list[Node] = [ctx.tree.root] * n
    weights = [1.0 / n] * n
    history: list[dict] = []
    for it in range(max_steps):
        live = [p for p in particles if p.finish_reason != "eos"]
        if not live or budget.exhausted(ctx.tree, ctx.started):
            break
        # Particles on the same node are extended together: one expansion, one child each.
        counts = Counter(live)
        expansions = await asyncio.gather(
            *(ctx.expand(node, c, step, Sampling(temperature=temperature)) for node, c in counts.items())
        )
        grown: dict[Node, list[Node]] = {node: list(kids) for node, kids in zip(counts, expansions)}
        pool = [p if p.finish_reason == "eos" else grown[p].pop() for p in particles]
        scores = await _lookahead_scores(ctx, pool, lookahead, step)
        temp = weight_temperature
        weights = softmax_weights(scores, temp)
        if anneal and it < anneal_steps:
            while ess(weights) < ess_threshold * n and temp < max_temperature:
                temp = min(max_temperature, temp * anneal_factor)
                weights = softmax_weights(scores, temp)
        history.append({"ess": ess(weights), "temperature": temp, "weight_sum": sum(weights)})
        picks = resample(weights, n, ctx.rng.random, resampling)
        particles = [pool[i] for i in picks]
        weights = [weights[i] for i in picks]
        total = sum(weights)
        weights = [w / total for w in weights]
    final_scores = await ctx.score(particles)
    unique = list(dict.fromkeys(particles))
    if select == "weight":
        chosen_node = max(unique, key=lambda p: (final_scores[particles.index(p)], -p.id))
    else:
        votes: dict[str | None, float] = defaultdict(float)
        for p, w in zip(particles, weights):
            votes[extract(ctx.tree.text(p))] += w
        best = max((a for a in votes if a is not None), key=lambda a: votes[a], default=None)
        chosen_node = next((p for p in unique if extract(ctx.tree.text(p)) == best), unique[0])
    scores_u = [final_scores[particles.index(p)] for p in unique]
    return finish(ctx, name, unique, scores_u, unique.index(chosen_node), extract, history=history, particles=len(particles))


@strategies.register("epf")
async def epf(ctx: SearchContext, budget: Budget, **options):
    """The entropic particle filtering preset: annealing and one-step look-ahead on."""
    options.setdefault("anneal", True)
    options.setdefault("lookahead", 1)
    return await particle(ctx, budget, name="epf", **options)


epf.options_from = particle  # type: ignore[attr-defined]  (epf takes particle's options)
