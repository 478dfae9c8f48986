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

Particle Gibbs (``iterations > 1``): the budget is split into ``iterations`` sweeps of
``n // iterations`` particles. The first sweep is plain filtering; each later one keeps a reference
path, drawn by weight from the previous sweep's final particles, in slot 0: at step ``t`` the
reference sits at its ``t``-th step with that prefix's weight, takes part in resampling (other slots
may fork its partial path) and is never resampled away. The answer comes from the last sweep.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.beam import _lookahead_scores, _step_stop
from search.budget import Budget
from search.options import Delimiter, Flag, NonNegative, Positive, PositiveFloat, StrategyOptions, Temperature

Resampling = Literal["multinomial", "systematic"]
ParticleSelection = Literal["weight", "vote"]


class ParticleOptions(StrategyOptions):
    """``particle``: see the module docstring. ``iterations`` above 1 also needs at least 2 particles
    per iteration (checked against the budget when the search starts)."""

    delimiter: Delimiter = "\n\n"
    weight_temperature: PositiveFloat = 1.0
    temperature: Temperature = 0.8
    resampling: Resampling = "systematic"
    anneal: Flag = False
    anneal_steps: NonNegative = 3
    ess_threshold: Annotated[float, Field(ge=0.0, le=1.0, strict=True)] = 0.5
    anneal_factor: Annotated[float, Field(gt=1.0, strict=True)] = 2.0  # > 1, or annealing would never end
    max_temperature: PositiveFloat = 8.0
    lookahead: NonNegative = 0
    iterations: Positive = 1
    select: ParticleSelection = "weight"
    max_steps: Positive = 40
    step_tokens: Positive = 256


class EPFOptions(ParticleOptions):
    """``epf``: particle filtering's options with annealing and one-step look-ahead on."""

    anneal: Flag = True
    lookahead: NonNegative = 1


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


async def _filter(ctx: SearchContext, budget: Budget, n: int, step: Stop, reference: list[Node] | None, *,
                  weight_temperature: float, temperature: float, resampling: str, anneal: bool, anneal_steps: int,
                  ess_threshold: float, anneal_factor: float, max_temperature: float, lookahead: int,
                  max_steps: int) -> tuple[list[Node], list[float], list[dict]]:
    """One particle-filter sweep with ``n`` particles. With a ``reference`` path (conditional SMC,
    for particle Gibbs) slot 0 follows that path step by step and is never resampled away, but
    the other slots may resample (fork) its partial trajectory."""
    particles: list[Node] = [ctx.tree.root] * n
    weights = [1.0 / n] * n
    history: list[dict] = []
    for it in range(max_steps):
        free = particles[1:] if reference is not None else particles
        live = [p for p in free if not p.finished]
        ref_done = reference is None or particles[0] is reference[-1]
        if (not live and ref_done) or budget.exhausted(ctx.tree, ctx.started):
            break
        # Particles on the same node are extended together: one expansion, one child each.
        counts = Counter(live)
        expansions = await asyncio.gather(
            *(ctx.expand(node, c, step, Sampling(temperature=temperature)) for node, c in counts.items())
        )
        grown: dict[Node, list[Node]] = {node: list(kids) for node, kids in zip(counts, expansions)}
        pool = [p if p.finished else grown[p].pop() for p in free]
        if reference is not None:
            pool.insert(0, reference[min(it, len(reference) - 1)])
        scores = await _lookahead_scores(ctx, pool, lookahead, step)
        temp = weight_temperature
        weights = softmax_weights(scores, temp)
        if anneal and it < anneal_steps:
            while ess(weights) < ess_threshold * n and temp < max_temperature:
                temp = min(max_temperature, temp * anneal_factor)
                weights = softmax_weights(scores, temp)
        history.append({"ess": ess(weights), "temperature": temp, "weight_sum": sum(weights)})
        if reference is not None:
            picks = [0] + resample(weights, n - 1, ctx.rng.random, resampling)
        else:
            picks = resample(weights, n, ctx.rng.random, resampling)
        particles = [pool[i] for i in picks]
        weights = [weights[i] for i in picks]
        total = sum(weights)
        weights = [w / total for w in weights]
    return particles, weights, history


@strategies.register("particle", options=ParticleOptions)
async def particle(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                   delimiter: str = "\n\n", weight_temperature: float = 1.0, temperature: float = 0.8,
                   resampling: Resampling = "systematic", anneal: bool = False, anneal_steps: int = 3,
                   ess_threshold: float = 0.5, anneal_factor: float = 2.0, max_temperature: float = 8.0,
                   lookahead: int = 0, iterations: int = 1, select: ParticleSelection = "weight", max_steps: int = 40,
                   step_tokens: int = 256, name: str = "particle"):
    """Particle filtering (see the module docstring); ``name`` labels the result (presets set it)."""
    if ctx.prm is None:
        raise ReasonError("prm", "particle filtering weights particles with a PRM", "pass --prm NAME[=PATH]")
    if iterations > 1 and budget.n // iterations < 2:
        raise ReasonError("iterations", f"needs at least 2 particles per Gibbs iteration (budget {budget.n}, "
                          f"iterations {iterations!r})", "raise the budget or lower iterations")
    n = budget.n // iterations
    step = _step_stop(delimiter, final, step_tokens)
    options = dict(weight_temperature=weight_temperature, temperature=temperature, resampling=resampling,
                   anneal=anneal, anneal_steps=anneal_steps, ess_threshold=ess_threshold, anneal_factor=anneal_factor,
                   max_temperature=max_temperature, lookahead=lookahead, max_steps=max_steps)
    reference: list[Node] | None = None
    references: list[int] = []
    history: list[dict] = []
    for sweep in range(iterations):
        particles, weights, steps = await _filter(ctx, budget, n, step, reference, **options)
        history += [{"iteration": sweep, **h} for h in steps]
        if sweep + 1 < iterations:
            # The next sweep's reference: one final particle drawn by weight.
            [pick] = resample(weights, 1, ctx.rng.random, "multinomial")
            reference = ctx.tree.path(particles[pick])[1:] or [particles[pick]]
            references.append(particles[pick].id)
        if budget.exhausted(ctx.tree, ctx.started):
            break
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
    return finish(ctx, name, unique, scores_u, unique.index(chosen_node), extract, history=history,
                  particles=len(particles), iterations=iterations, references=references)


@strategies.register("epf", options=EPFOptions)
async def epf(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
              anneal: bool = True, lookahead: int = 1, **options: Any):
    """The entropic particle filtering preset: :func:`particle` with annealing and one-step
    look-ahead on by default; ``options`` are particle's others."""
    return await particle(ctx, budget, extract=extract, final=final, anneal=anneal, lookahead=lookahead, name="epf",
                          **options)
