"""Particle filtering over steps (Puri et al. 2025), its entropic variant ``epf`` (Giannone et al. 2025)
and particle Gibbs.

**Particles and the tree.** ``N`` particles are ``N`` slots, each pointing at a node of the merged
tree (several slots may point at one node). At step ``t = 1, 2, ...`` every unfinished particle grows
one step (up to the step delimiter) sampled at ``temperature``. The slots on one node are ONE
expansion request for as many samples as there are slots; the request's entries are handed to the
slots one to one, so a merged child (several identical samples) holds as many particles as samples
produced it. A node gets at most one such request per step (and, with look-ahead, at most one
look-ahead request). A finished (EOS) particle stays in the pool with its final score and is never
grown. Under a token budget (``budget_tokens``), when what is left cannot pay for two more steps
like the last one, the sweep ends by completing its unfinished slots with the final stop, one
request at a time, each given every token left: one slot of each distinct particle, the one holding
the most slots first, then a second slot of each, and so on until no token is left. So a capped
search still ends with finished solutions (``info["history"][-1]["completed"]``). When the token
budget cannot serve a request (``ctx.expand`` returns nothing) its particles stay where they are and
that step is the last.

**Weights.** With ``r_i`` the PRM's aggregated score of particle ``i``'s whole partial path
(``aggregation`` of :func:`search.solve.solve_problems`: ``last``, ``min``, ``prod``, ``mean`` or
``model``), clipped to ``[1e-4, 1 - 1e-4]``, and ``T_w = weight_temperature``::

    l_i = logit(r_i) = log(r_i / (1 - r_i))
    w_i = exp(l_i / T_w) / sum_j exp(l_j / T_w)                                      (PF weights)

The PRM scores the whole prefix again at every step, so the weight is recomputed from scratch, not
multiplied onto the previous one. ``N`` slots are then resampled from ``w`` (``multinomial`` or
``systematic``, uniforms from the context's seeded stream) and every slot's weight is reset to
``1/N``: a particle with ``k`` copies counts ``k`` times, never ``k`` times its old weight. The
last step does not resample: when every particle has finished, when a resampling would leave only
finished particles, or when ``max_steps``, the token budget or another budget cap is reached, the
final particles are that step's pool with their weights ``w`` (a cap found only between steps
leaves the resampled slots with ``1/N`` each). The answer is the finished final particle with the
highest PRM score (any final particle when none finished; ``select="weight"``, its_hub's
``argmax``) or the answer with the largest summed final weight (``"vote"``).

**Entropic annealing** (``anneal``, its_hub's ``EntropicParticleFiltering`` with
``temperature_method="ess"``). With ``p`` the resampling distribution above (the look-ahead
modulated one when look-ahead is on), ``N_f`` the number of slots being resampled (``N``, or
``N - 1`` beside a particle-Gibbs reference), ``t`` the step index (1 at the first resampling of a
sweep) and ``T = max_steps``::

    ESS = 1 / sum_i clip(p_i, 1e-7, 1 - 1e-7) ** 2
    tau = max(1, (N_f / ESS) * (1 - t / T))   if ESS / N_f < ess_threshold and t / T < anneal_phase
    tau = 1                                   otherwise
    p'_i = exp(l_i / (T_w * tau)) / sum_j exp(l_j / (T_w * tau))

and the slots are resampled from ``p'``. With the defaults (``ess_threshold = anneal_phase = 0.5``)
this is ``tau = max(1, (N/ESS)(1 - t/T))`` when ``ESS < N/2`` and ``t < T/2``. The final weights
``w`` (vote, Gibbs reference) are never annealed.

**Look-ahead modulation** (``lookahead=1``; one step, as ePF). The ePF paper bases the resampling
weights on a one-step look-ahead in the manner of the auxiliary particle filter; its_hub leaves it
unimplemented, so this is our reading. After the step-``t`` particles are scored, every unfinished
one draws one more step ``x~_i`` at ``temperature`` (slots on one node: one request, entries one
to one) and it is scored, ``r~_i = r(x_{1:t} + x~_i)``; a finished particle's look-ahead is itself
(``r~_i = r_i``). The look-ahead *modulates* the weight, it does not replace it::

    l_i = logit(r_i) + lookahead_weight * logit(r~_i)

and the resampling distribution ``p``, ``tau`` and ``p'`` are computed from that ``l_i`` as above
(the final weights ``w`` keep the plain ``logit(r_i)``; the last step draws no look-ahead). The
look-ahead step ``x~_i`` is sampled like any step, so it can serve as one; it is not
thrown away but stays in the tree as the next step of the first slot resampled from particle ``i``
(the other copies sample fresh steps), so it costs generation only when ``i`` is not resampled.
The strict auxiliary-filter correction (dividing the next weight by the look-ahead factor) is not
applied: the next step's weight is recomputed from the PRM, as in plain filtering.

**Particle Gibbs** (``iterations > 1``): the budget is split into ``iterations`` sweeps of
``n // iterations`` particles. The first sweep is plain filtering; each later one keeps a reference
path, drawn from the previous sweep's final particles with probability ``w_i`` (their final
weights), in slot 0: at step ``t`` the reference sits at its ``t``-th step with that prefix's
weight (its look-ahead is its own next step), takes part in resampling (other slots may fork its
partial path: they sample fresh next steps) and is never resampled away. The answer comes from the
last sweep.

``info["history"]`` holds one record per step: the sweep (``iteration``), ``step`` ``t``, the
pool's node ids (``pool``), the look-ahead node ids (``ahead``, with look-ahead), ``ess``, the
annealing ``temperature``, whether it resampled, the pool indices drawn (``picks``) and the slots'
``weights`` after the step (uniform after resampling).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import finish
from search.budget import Budget
from search.options import (
    Delimiter,
    Flag,
    Positive,
    PositiveFloat,
    StrategyOptions,
    Temperature,
)
from search.weights import annealing_temperature, ess, logit, resample, softmax, softmax_weights

Resampling = Literal["multinomial", "systematic"]
ParticleSelection = Literal["weight", "vote"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]
LookAhead = Annotated[int, Field(ge=0, le=1, strict=True)]  # one-step look-ahead (ePF) or none


class ParticleOptions(StrategyOptions):
    """``particle``: see the module docstring. ``iterations`` above 1 also needs at least 2 particles
    per iteration (checked against the budget when the search starts)."""

    delimiter: Delimiter = "\n\n"
    weight_temperature: PositiveFloat = 1.0
    temperature: Temperature = 0.8
    resampling: Resampling = "systematic"
    anneal: Flag = False
    ess_threshold: Fraction = 0.5
    anneal_phase: Fraction = 0.5
    lookahead: LookAhead = 0
    lookahead_weight: PositiveFloat = 1.0
    iterations: Positive = 1
    select: ParticleSelection = "weight"
    max_steps: Positive = 40
    step_tokens: Positive = 256


class EPFOptions(ParticleOptions):
    """``epf``: particle filtering's options with entropic annealing and one-step look-ahead on."""

    anneal: Flag = True
    lookahead: LookAhead = 1


@dataclass
class _Settings:
    """One search's filtering settings (the strategy's options that shape a sweep)."""

    step: Stop
    weight_temperature: float
    temperature: float
    resampling: str
    anneal: bool
    ess_threshold: float
    anneal_phase: float
    lookahead: int
    lookahead_weight: float
    max_steps: int
    final: Stop


@dataclass
class _Sweep:
    """A sweep's final particles (reference slot first, if any), their weights and its history."""

    particles: list[Node]
    weights: list[float]
    history: list[dict] = field(default_factory=list)


async def _grow(ctx: SearchContext, nodes: Sequence[Node], cfg: _Settings) -> tuple[list[Node | None], bool]:
    """One sampled step for each entry of ``nodes``: entries on one node are one request for as many
    samples, its entries handed out one to one. An entry the token budget could not serve gets
    ``None``; the flag says whether that happened."""
    counts = Counter(nodes)
    sampling = Sampling(temperature=cfg.temperature)
    grown = await asyncio.gather(*(ctx.expand(node, c, cfg.step, sampling) for node, c in counts.items()))
    queues = {node: iter(kids) for node, kids in zip(counts, grown)}
    out = [next(queues[node], None) for node in nodes]
    return out, any(x is None for x in out)


async def _propagate(ctx: SearchContext, slots: list[Node], inherit: list[Node | None],
                     cfg: _Settings) -> tuple[list[Node], bool]:
    """Every unfinished slot's next step: its inherited look-ahead step if it has one, else a fresh
    sample. A slot the token budget could not serve stays where it was; the flag says so."""
    todo = [i for i, s in enumerate(slots) if not s.finished and inherit[i] is None]
    fresh, spent = await _grow(ctx, [slots[i] for i in todo], cfg)
    out = [s if s.finished else inherit[i] for i, s in enumerate(slots)]
    for i, kid in zip(todo, fresh):
        out[i] = kid if kid is not None else slots[i]
    return out, spent


async def _look_ahead(ctx: SearchContext, pool: list[Node], scores: list[float], ref_next: Node | None,
                      has_ref: bool, cfg: _Settings) -> tuple[list[Node | None], list[float]]:
    """Each pool entry's look-ahead step and its score (``None`` and the entry's own score for a
    finished entry or one the token budget could not serve). The reference entry's look-ahead
    is its own next step ``ref_next``."""
    ahead: list[Node | None] = [None] * len(pool)
    todo = [i for i, x in enumerate(pool) if not x.finished and not (has_ref and i == 0)]
    kids, _ = await _grow(ctx, [pool[i] for i in todo], cfg)
    for i, kid in zip(todo, kids):
        ahead[i] = kid
    if has_ref and not pool[0].finished:
        ahead[0] = ref_next
    found = [a for a in ahead if a is not None]
    found_scores = dict(zip(found, await ctx.score(found))) if found else {}
    return ahead, [found_scores[a] if a is not None else s for a, s in zip(ahead, scores)]


def _inherited(picks: list[int], ahead: list[Node | None], has_ref: bool) -> list[Node | None]:
    """The look-ahead step each resampled slot takes as its next step: the first slot drawn from
    pool entry ``i`` inherits ``ahead[i]``; other copies (and forks of the reference) get none."""
    seen: set[int] = set()
    out: list[Node | None] = []
    for i in picks:
        first = i not in seen and not (has_ref and i == 0)
        seen.add(i)
        out.append(ahead[i] if first else None)
    return out


def _done(pool: list[Node], reference: list[Node] | None) -> bool:
    """True when every pool particle has finished (and the reference, if any, is at its end)."""
    free = pool[1:] if reference is not None else pool
    return all(p.finished for p in free) and (reference is None or pool[0] is reference[-1])


def _resampling_distribution(scores: list[float], aims: list[float] | None, t: int, free: int,
                              cfg: _Settings) -> tuple[list[float], float, list[float]]:
    """The step's base resampling distribution (look-ahead modulated when ``aims``, the look-ahead
    scores, are given), the annealing temperature and the distribution resampled from."""
    logits = [logit(r) for r in scores]
    if aims is not None:
        logits = [x + cfg.lookahead_weight * logit(a) for x, a in zip(logits, aims)]
    base = softmax(logits, cfg.weight_temperature)
    if not cfg.anneal:
        return base, 1.0, base
    tau = annealing_temperature(base, t, cfg.max_steps, free, ess_threshold=cfg.ess_threshold, phase=cfg.anneal_phase)
    return base, tau, base if tau == 1.0 else softmax(logits, cfg.weight_temperature * tau)


async def _filter(ctx: SearchContext, budget: Budget, n: int, reference: list[Node] | None,
                  cfg: _Settings) -> _Sweep:
    """One particle-filter sweep with ``n`` particles. With a ``reference`` path (conditional SMC,
    for particle Gibbs) slot 0 follows that path step by step and is never resampled away, but
    the other slots may resample (fork) its partial trajectory. The sweep ends on its last step
    (see the module docstring) with the pool and its PF weights, or at a budget cap found between
    steps with the resampled slots and uniform weights."""
    has_ref = reference is not None
    free = n - 1 if has_ref else n
    slots: list[Node] = [ctx.tree.root] * free
    inherit: list[Node | None] = [None] * free
    sweep = _Sweep(particles=list(slots), weights=[1.0 / free] * free)
    step_cost = 0  # tokens the last step generated (look-ahead included)
    for t in range(1, cfg.max_steps + 1):
        if budget.exhausted(ctx.tree, ctx.started):
            break
        left = ctx.tokens_left
        if t > 1 and left is not None and left < 2 * step_cost and not _done(sweep.particles, reference):
            await _finish_near_cap(ctx, sweep, t, cfg)
            break
        before = ctx.tree.ledger.generated_tokens
        ref_node = reference[min(t, len(reference)) - 1] if has_ref else None
        grown, spent = await _propagate(ctx, slots, inherit, cfg)
        pool = ([ref_node] if has_ref else []) + grown
        scores = await ctx.score(pool)
        record: dict[str, Any] = {"step": t, "pool": [x.id for x in pool]}
        last = spent or t == cfg.max_steps or _done(pool, reference) or budget.exhausted(ctx.tree, ctx.started)
        ahead: list[Node | None] = [None] * len(pool)
        aims = None
        if cfg.lookahead and not last:
            ref_next = reference[t] if has_ref and t < len(reference) else None
            ahead, aims = await _look_ahead(ctx, pool, scores, ref_next, has_ref, cfg)
            record["ahead"] = [a.id if a is not None else None for a in ahead]
            last = budget.exhausted(ctx.tree, ctx.started)
        base, tau, probs = _resampling_distribution(scores, aims, t, free, cfg)
        record.update(ess=ess(base), temperature=tau)
        picks = [] if last else resample(probs, free, ctx.rng.random, cfg.resampling)
        # A resampling that leaves nothing to grow ends the sweep with the weighted pool instead.
        if last or (all(pool[i].finished for i in picks) and (not has_ref or t >= len(reference))):
            weights = softmax_weights(scores, cfg.weight_temperature)
            sweep.particles, sweep.weights = pool, weights
            sweep.history.append({**record, "resampled": False, "weights": weights})
            break
        step_cost = ctx.tree.ledger.generated_tokens - before
        slots = [pool[i] for i in picks]
        inherit = _inherited(picks, ahead, has_ref)
        sweep.particles = ([ref_node] if has_ref else []) + slots
        sweep.weights = [1.0 / n] * n
        sweep.history.append({**record, "resampled": True, "picks": picks, "weights": sweep.weights})
    return sweep


async def _finish_near_cap(ctx: SearchContext, sweep: _Sweep, t: int, cfg: _Settings) -> None:
    """End ``sweep`` when the token budget cannot pay for two more steps of its particles (see the
    module docstring): unfinished slots are completed with the final stop one request at a time,
    each given every token left, until none is left. The order takes one slot of each distinct
    particle, the one holding the most slots first, then a second slot of each, and so on; each completion
    replaces its slot, and the final weights are the PF weights of the resulting pool. Without this
    a capped search ends with every particle mid-solution and nothing to answer with."""
    # After a resampling every slot weighs 1/N, so a particle weighs as many slots as it holds.
    slots_of: dict[Node, list[int]] = defaultdict(list)
    for i, p in enumerate(sweep.particles):
        if not p.finished:
            slots_of[p].append(i)
    ranked = sorted(slots_of, key=lambda p: (-len(slots_of[p]), p.id))
    order = [slots_of[p][k] for k in range(max(map(len, slots_of.values()), default=0))
             for p in ranked if k < len(slots_of[p])]
    pool = list(sweep.particles)
    completed: list[int] = []
    sampling = Sampling(temperature=cfg.temperature)
    for i in order:
        if not ctx.tokens_left:
            break
        kids = await ctx.expand(sweep.particles[i], 1, cfg.final, sampling)
        if kids:
            pool[i] = kids[0]
            completed.append(kids[0].id)
    scores = await ctx.score(pool)
    weights = softmax_weights(scores, cfg.weight_temperature)
    sweep.particles, sweep.weights = pool, weights
    sweep.history.append({"step": t, "pool": [x.id for x in pool], "resampled": False, "weights": weights,
                          "completed": completed})


def _settings(delimiter: str, final: Stop, step_tokens: int, **options: Any) -> _Settings:
    """The sweep settings; a step stops at ``delimiter`` or after ``step_tokens`` (at most the final
    answer's token cap)."""
    step = Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))
    return _Settings(step=step, final=final, **options)


@strategies.register("particle", options=ParticleOptions)
async def particle(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                   delimiter: str = "\n\n", weight_temperature: float = 1.0, temperature: float = 0.8,
                   resampling: Resampling = "systematic", anneal: bool = False, ess_threshold: float = 0.5,
                   anneal_phase: float = 0.5, lookahead: int = 0, lookahead_weight: float = 1.0,
                   iterations: int = 1, select: ParticleSelection = "weight", max_steps: int = 40,
                   step_tokens: int = 256, name: str = "particle"):
    """Particle filtering (see the module docstring); ``name`` labels the result (presets set it)."""
    if ctx.prm is None:
        raise ReasonError("prm", "particle filtering weights particles with a PRM", "pass --prm NAME[=PATH]")
    if iterations > 1 and budget.n // iterations < 2:
        raise ReasonError("iterations", f"needs at least 2 particles per Gibbs iteration (budget {budget.n}, "
                          f"iterations {iterations!r})", "raise the budget or lower iterations")
    n = budget.n // iterations
    cfg = _settings(delimiter, final, step_tokens, weight_temperature=weight_temperature, temperature=temperature,
                    resampling=resampling, anneal=anneal, ess_threshold=ess_threshold, anneal_phase=anneal_phase,
                    lookahead=lookahead, lookahead_weight=lookahead_weight, max_steps=max_steps)
    reference: list[Node] | None = None
    references: list[int] = []
    history: list[dict] = []
    sweep = _Sweep(particles=[], weights=[])
    for it in range(iterations):
        sweep = await _filter(ctx, budget, n, reference, cfg)
        history += [{"iteration": it, **h} for h in sweep.history]
        if budget.exhausted(ctx.tree, ctx.started) or it + 1 == iterations:
            break
        # The next sweep's reference: one final particle drawn by its final weight.
        [pick] = resample(sweep.weights, 1, ctx.rng.random, "multinomial")
        chosen = sweep.particles[pick]
        if chosen.is_root:
            break
        reference = ctx.tree.path(chosen)[1:]
        references.append(chosen.id)
    return await _answer(ctx, name, sweep, select, extract, history=history, particles=n, iterations=iterations,
                         references=references)


async def _answer(ctx: SearchContext, name: str, sweep: _Sweep, select: ParticleSelection,
                  extract: Callable[[str], str | None], **info: Any):
    """The result from a sweep's final particles: the best-scored one (``"weight"``) or the answer
    with the largest summed weight (``"vote"``); every particle is a candidate (copies counted)."""
    kept = [(p, w) for p, w in zip(sweep.particles, sweep.weights) if not p.is_root]
    if not kept:
        return finish(ctx, name, [], [], 0, extract, **info)
    nodes = [p for p, _ in kept]
    scores = await ctx.score(nodes)
    if select == "weight":
        chosen = max(range(len(nodes)), key=lambda i: (nodes[i].finished, scores[i], -nodes[i].id))
    else:
        votes: dict[str, float] = defaultdict(float)
        answers = [extract(ctx.tree.text(p)) for p in nodes]
        for a, (_, w) in zip(answers, kept):
            if a is not None:
                votes[a] += w
        best = max(votes, key=lambda a: (votes[a], -answers.index(a)), default=None)
        chosen = answers.index(best) if best is not None else 0
    return finish(ctx, name, nodes, list(scores), chosen, extract, **info)


@strategies.register("epf", options=EPFOptions)
async def epf(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
              anneal: bool = True, lookahead: int = 1, **options: Any):
    """The entropic particle filtering preset: :func:`particle` with entropic annealing and one-step
    look-ahead modulation on by default; ``options`` are particle's others."""
    return await particle(ctx, budget, extract=extract, final=final, anneal=anneal, lookahead=lookahead, name="epf",
                          **options)
