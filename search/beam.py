"""Step-level beam search and diverse verifier tree search (DVTS), after Snell et al. and the
search-and-learn recipes, over the merged tree (identical samples are one node with a count).

Both grow the tree one step (up to the suite's step delimiter) at a time and let the PRM choose.
Write ``N`` for the budget ``n``, ``M`` for ``width`` and ``K = N // M``; ``r(s)`` is the PRM's
aggregated score of the path ``s`` (the scorer's aggregation: last, min, prod, mean or model).

* ``beam``: the root gets ``N`` first steps. Every step ranks the new unfinished samples by ``r``
  (with ``lookahead = L > 0``: ``r`` of the candidate followed by ``L`` greedy steps; ties to the
  older node) and draws ``K * M`` next samples from the beam, each distinct node in ONE request
  (never two requests for one state). ``duplicates`` says how a state sampled several times
  counts:

  - ``"weight"`` (default): the beam is the top ``K`` unfinished samples (all of them when fewer
    are left), one entry per sample; a node that fills ``c`` of those slots draws ``c * M``
    samples. This is beam search over the unmerged samples, with identical beams expanded as one
    node: a step the policy repeats keeps its weight. Among samples of equal score the slots go
    round robin (the ``j``-th sample of a node ranks after the first ``j`` of every other node
    with that score, older nodes first), so a tie is not settled wholly by node age.
  - ``"filter"``: search-and-learn's ``filter_duplicates``: the beam is the top ``K`` *distinct*
    nodes, refilled from the next-best distinct candidates, so it holds ``B = min(K, #distinct)``
    nodes; the ``K * M`` samples are shared out over them, ``K * M // B`` each and one more for
    the first ``K * M mod B`` (``M`` each for a full beam; with a short one the step still draws
    ``K * M`` samples, as search-and-learn tops its active beams up to ``N``).

* ``dvts``: ``K`` independent subtrees, each greedy within itself: every iteration each subtree
  draws ``M`` next steps from its node and moves to the best of ITS ``M`` samples by ``r``. The
  subtrees on one node (they all start at the root) are served by one request of ``c * M``
  samples, sample ``j * M + i`` being subtree ``j``'s ``i``-th: exactly their separate draws,
  without expanding the node twice. All subtrees' new children are scored in one PRM call per
  iteration. A subtree ends when its pick is finished; then every finished sample among its last
  ``M`` is a candidate (search-and-learn keeps a subtree's last ``M`` completions).

Each step is capped at ``step_tokens`` tokens and there are at most ``max_steps`` of them. When
the step cap is reached with unfinished beams (beam: also when ``N`` samples have finished or a
budget cap ends the search), every beam node is completed to the end with the final stop, one
sample each (DVTS: its last iteration draws its ``M`` samples with the final stop), and those
completions are candidates too: search-and-learn's last iteration to EOS.

The answer is chosen among the candidates, one entry per sample (a finished node drawn ``c``
times counts ``c`` times in a vote) by ``select``: ``"prm"`` takes ``argmax r``, ``"majority"``
the most frequent answer ``argmax_a sum_i 1[a_i = a]``, ``"weighted"`` the answer with the largest
summed score ``argmax_a sum_i 1[a_i = a] r_i`` (:func:`search.basic.choose`). With no candidate at
all (a token budget spent early), the unfinished beams are the candidates. A request the token
budget cannot serve returns no children; the search then stops with what it has.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Literal

from reason.core.context import SearchContext
from reason.core.engine.base import Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.tree import Node
from search import strategies
from search.basic import Selection, choose, finish
from search.budget import Budget
from search.options import Delimiter, NonNegative, Positive, StrategyOptions, Temperature

Duplicates = Literal["weight", "filter"]


class DVTSOptions(StrategyOptions):
    """``dvts``: the step delimiter, children per beam (``width``), temperature, caps on steps and
    on tokens per step, and how the answer is chosen (``select``)."""

    delimiter: Delimiter = "\n\n"
    width: Positive = 4
    temperature: Temperature = 0.8
    max_steps: Positive = 40
    step_tokens: Positive = 256
    select: Selection = "prm"


class BeamOptions(DVTSOptions):
    """``beam``: those of ``dvts``, the ``lookahead`` depth of scoring and how a state sampled
    several times counts (``duplicates``: ``weight`` or ``filter``)."""

    lookahead: NonNegative = 0
    duplicates: Duplicates = "weight"


def _check(ctx: SearchContext, budget: Budget, width: int) -> int:
    if ctx.prm is None:
        raise ReasonError("prm", "beam search needs a PRM", "pass --prm NAME[=PATH]")
    return max(1, budget.n // width)


async def _grow(ctx: SearchContext, nodes: list[Node], n: int | list[int], step: Stop,
                temperature: float) -> list[list[Node]]:
    """Expand every node of ``nodes`` together, ``n`` samples each (or ``n[i]`` for node ``i``);
    the children per node, one entry per sample (``[]`` where the token budget is spent)."""
    counts = n if isinstance(n, list) else [n] * len(nodes)
    sampling = Sampling(temperature=temperature)
    return list(await asyncio.gather(*(ctx.expand(x, c, step, sampling) for x, c in zip(nodes, counts))))


async def _lookahead_scores(ctx: SearchContext, nodes: list[Node], depth: int, step: Stop) -> list[float]:
    """PRM scores of ``nodes`` (repeats allowed, one score per entry); with ``depth > 0`` each
    unfinished node is scored after ``depth`` further greedy steps instead (each distinct node is
    rolled out once; a roll-out stops early when it finishes or the token budget is spent)."""
    if depth <= 0:
        return await ctx.score(nodes)
    ends = {x: x for x in nodes}
    for _ in range(depth):
        live = [x for x, end in ends.items() if not end.finished]
        if not live:
            break
        grown = await _grow(ctx, [ends[x] for x in live], 1, step, 0.0)
        for x, kids in zip(live, grown):
            if kids:
                ends[x] = kids[0]
    return await ctx.score([ends[x] for x in nodes])


def _step_stop(delimiter: str, final: Stop, step_tokens: int) -> Stop:
    """The stop of one step: the delimiter, at most ``step_tokens`` (and the final cap) tokens."""
    return Stop(strings=(delimiter,), max_tokens=min(step_tokens, final.max_tokens or step_tokens))


def _shares(total: int, parts: int) -> list[int]:
    """``total`` samples split over ``parts`` nodes as evenly as possible, the first ones getting
    one more."""
    return [total // parts + (i < total % parts) for i in range(parts)]


async def _result(ctx: SearchContext, name: str, candidates: list[Node], fallback: list[Node],
                  extract: Callable[[str], str | None], select: Selection, **info: object):
    """Score ``candidates`` (``fallback`` when there are none) and choose the answer by ``select``."""
    pool = candidates or list(dict.fromkeys(fallback))
    scores = list(await ctx.score(pool)) if pool else []
    answers = [extract(ctx.tree.text(x)) for x in pool]
    return finish(ctx, name, pool, list(scores), choose(answers, scores, select), extract, **info)


async def _beam_of(ctx: SearchContext, candidates: list[Node], keep: int, width: int, lookahead: int,
                   step: Stop, duplicates: Duplicates) -> dict[Node, int]:
    """The next beam: each distinct node in it, best first, with the samples it draws (see the
    module docstring for ``duplicates``)."""
    entries = sorted((c for c in candidates if not c.finished), key=lambda c: c.id)
    live = list(dict.fromkeys(entries))
    if not live:
        return {}
    scores = dict(zip(live, await _lookahead_scores(ctx, live, lookahead, step)))
    if duplicates == "filter":
        top = sorted(live, key=lambda c: (-scores[c], c.id))[:keep]
        return dict(zip(top, _shares(keep * width, len(top))))
    copy = Counter()
    ranked = []
    for c in entries:  # the j-th sample of a node ranks after the first j of every equal-scored one
        ranked.append((-scores[c], copy[c], c.id, c))
        copy[c] += 1
    slots = Counter(c for *_, c in sorted(ranked)[:keep])
    return {node: c * width for node, c in sorted(slots.items(), key=lambda x: (-scores[x[0]], x[0].id))}


@strategies.register("beam", options=BeamOptions)
async def beam(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
               delimiter: str = "\n\n", width: int = 4, temperature: float = 0.8, max_steps: int = 40,
               step_tokens: int = 256, select: Selection = "prm", lookahead: int = 0,
               duplicates: Duplicates = "weight"):
    """Step-level beam search, each state expanded once, with a final completion of the
    unfinished beams (see the module docstring). ``info["beams"]`` lists the node ids of the beam
    expanded at each step, ``info["draws"]`` the samples each drew; ``info["completed"]`` the beam
    nodes completed at the end."""
    keep = _check(ctx, budget, width)
    step = _step_stop(delimiter, final, step_tokens)
    finished: list[Node] = []  # one entry per finished sample
    beams: list[list[int]] = []
    draws: list[list[int]] = []
    candidates = await ctx.expand(ctx.tree.root, budget.n, step, Sampling(temperature=temperature))
    active: list[Node] = []  # the beam not expanded yet
    stalled: list[Node] = []  # the last beam expanded, when the token budget gave it no children
    for it in range(max_steps):
        finished += [c for c in candidates if c.finished]
        plan = await _beam_of(ctx, candidates, keep, width, lookahead, step, duplicates)
        active = list(plan)
        if not active or it == max_steps - 1 or len(finished) >= budget.n or budget.exhausted(ctx.tree, ctx.started):
            break
        beams.append([b.id for b in active])
        draws.append(list(plan.values()))
        grown = await _grow(ctx, active, list(plan.values()), step, temperature)
        candidates = [c for kids in grown for c in kids]
        if not candidates:  # the token budget is spent
            active, stalled = [], active
            break
    ends = await _grow(ctx, active, 1, final, temperature)
    completed = [c for kids in ends for c in kids]
    return await _result(ctx, "beam", finished + completed, active + stalled, extract, select,
                         beams=beams, draws=draws, kept_per_step=[len(b) for b in beams],
                         completed=[b.id for b, kids in zip(active, ends) if kids])


@strategies.register("dvts", options=DVTSOptions)
async def dvts(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
               delimiter: str = "\n\n", width: int = 4, temperature: float = 0.8, max_steps: int = 40,
               step_tokens: int = 256, select: Selection = "prm"):
    """Diverse verifier tree search (see the module docstring). ``info["iterations"]`` counts the
    iterations (one PRM call each), ``info["paths"]`` each subtree's node after each iteration
    (an id, ``None`` once it ended)."""
    subtrees = _check(ctx, budget, width)
    step = _step_stop(delimiter, final, step_tokens)
    beams: list[Node | None] = [ctx.tree.root] * subtrees
    finished: list[Node] = []
    stalled: list[Node] = []  # subtrees the token budget stopped
    paths: list[list[int | None]] = []
    for it in range(max_steps):
        groups: dict[Node, list[int]] = {}
        for i, b in enumerate(beams):
            if b is not None:
                groups.setdefault(b, []).append(i)
        if not groups or budget.exhausted(ctx.tree, ctx.started):
            break
        stop = final if it == max_steps - 1 else step
        grown = await _grow(ctx, list(groups), [width * len(m) for m in groups.values()], stop, temperature)
        distinct = list(dict.fromkeys(c for kids in grown for c in kids))
        scores = dict(zip(distinct, await ctx.score(distinct))) if distinct else {}
        for (node, members), kids in zip(groups.items(), grown):
            finished += _advance(beams, node, members, kids, width, scores, stalled)
        paths.append([None if b is None else b.id for b in beams])
        if not distinct:
            break
    live = [b for b in beams if b is not None]
    return await _result(ctx, "dvts", finished, live + stalled, extract, select,
                         subtrees=subtrees, iterations=len(paths), paths=paths)


def _advance(beams: list[Node | None], node: Node, members: list[int], kids: list[Node], width: int,
             scores: dict[Node, float], stalled: list[Node]) -> list[Node]:
    """Move each subtree of ``members`` (all on ``node``) to the best of its own ``width`` samples
    among ``kids`` (ties to the older node); returns the finished samples of the subtrees that
    ended here."""
    if not kids:  # the token budget is spent
        stalled.append(node)
        for i in members:
            beams[i] = None
        return []
    done: list[Node] = []
    for j, i in enumerate(members):
        own = kids[j * width:(j + 1) * width]
        if not own:
            beams[i] = None
            continue
        pick = min(own, key=lambda c: (-scores[c], c.id))
        beams[i] = None if pick.finished else pick
        if pick.finished:
            done += [c for c in own if c.finished]
    return done
