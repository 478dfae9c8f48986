"""TreePO segment rollouts: a tree of fixed-length segments grown to ``width`` leaves.

Every live path advances one segment of ``segment_tokens`` tokens per round (one tree node per
segment, so siblings share their prefix in the engine's cache). The root first splits into
``first_divergence`` branches (an int, or a ``(low, high)`` range drawn from the seeded stream).
After each round a path ends early when its text holds a complete answer (``answer_complete``),
at EOS or a stop string, at the response cap, at ``max_depth`` segments, or when it repeats itself
(some ``repetition[0]``-character substring occurs ``repetition[1]`` times); the others go on.

Budget handoff: the live paths of a round get ``divergence`` children each plus ``divergence`` for
every path that finished this round, never more than the ``width`` minus the leaves already
finished; every live path keeps at least one child. How the children are shared among the live
paths is the ``policy``: ``"fixed"`` (evenly), ``"low_prob"`` (weights
``softmax(-(lp - min lp) / div_temperature)``, favouring uncertain paths) or ``"high_prob"`` (the
opposite sign), where ``lp`` is the path's summed token log-probability (the model's own, or the
sampling distribution's from an engine that reports only those), or its mean with
``normalize=True``. Integer shares come from the largest remainder, ties broken by the seeded
stream. When nothing is alive and fewer than ``width`` leaves exist, finished paths (best finish
first: answer, EOS, length, depth, repetition) are re-branched from a segment boundary: a random one
(``fallback="random"``) or the start of the segment holding the path's least likely token
(``"min_logprob"``).

Multiplicity: identical samples of one node are one merged child (the context merges them), listed
once per sample in what the expansion returns. Each listing is a path of its own: a child sampled
``m`` times counts ``m`` live paths in the handoff above (``m`` shares of children, at least one
each, asked for in one expansion of the child), and a finished child sampled ``m`` times is ``m``
leaves, so the finished leaf-samples reach ``width`` as without merging. The leaves of
:class:`TreeGrowth` list such a leaf once per sample.

Leaves carry TreePO's tree-based segment-level advantages (:func:`search.records.tree_advantages`).
In :func:`treepo` (inference) the reward is the PRM score when a PRM is given, else agreement with
the majority answer; :func:`rollout` (RL) takes rewards from a verifier or a reward function.

Choices where the paper is vague: segment nodes are expanded with the context's per-request seeds;
the response cap is the final stop's ``max_tokens``; fallback adds ``divergence`` branches per
finished path in priority order until the width is reached.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from reason.core.context import Runner, SearchContext
from reason.core.engine.base import Engine, Sampling, Stop, run_sampling
from reason.core.errors import ReasonError
from reason.core.scorers import Verifier
from reason.core.tree import FinishReason, Node, Tree
from search import strategies
from search.basic import Selection, choose, finish
from search.budget import Budget
from search.options import Flag, Positive, PositiveFloat, StrategyOptions, Temperature
from search.records import (
    WEIGHTINGS,
    LogprobsMode,
    RolloutRecord,
    check_logprobs_mode,
    leaf_records,
    reward_source,
    tree_advantages,
)

Policy = Literal["fixed", "low_prob", "high_prob"]
Fallback = Literal["random", "min_logprob"]
# Finish quality, best first: the order finished paths are re-branched in.
PRIORITY: dict[FinishReason, int] = {"answer": 0, "eos": 1, "stop": 1, "length": 2, "max_depth": 3, "repetition": 4}
# Engine finish reasons that end a path (a segment's end does not).
ENGINE_ENDS: tuple[FinishReason, ...] = ("eos", "stop", "length")


class GrowOptions(StrategyOptions):
    """How :func:`grow` grows a segment tree (the options of :func:`rollout`; see the module docstring)."""

    segment_tokens: Positive = 512
    max_depth: Positive = 14
    divergence: Positive = 2
    first_divergence: Positive | tuple[Positive, Positive] = (2, 8)
    policy: Policy = "fixed"
    div_temperature: PositiveFloat = 1.0
    normalize: Flag = False
    fallback: Fallback = "random"
    temperature: Temperature = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] = 1.0
    answer_complete: Callable[[str], bool] | None = None
    repetition: tuple[Positive, Positive] | None = (32, 8)


class TreePOOptions(GrowOptions):
    """``treepo``: :class:`GrowOptions` at temperature 0.8, and how the answer is chosen."""

    temperature: Temperature = 0.8
    select: Selection = "majority"


def has_repetition(text: str, size: int = 32, times: int = 8) -> bool:
    """True when some ``size``-character substring of ``text`` occurs at least ``times`` times."""
    if len(text) < size * times:
        return False
    counts = Counter(text[i:i + size] for i in range(len(text) - size + 1))
    return max(counts.values()) >= times


def split_children(total: int, weights: Sequence[float], tie_break: Sequence[float]) -> list[int]:
    """Share ``total`` children among paths by ``weights``: one each, the rest by largest remainder
    (ties go to the smaller ``tie_break``)."""
    k = len(weights)
    if total < k:
        raise ValueError(f"cannot give {k} paths at least one child each from {total}")
    extra = total - k
    wsum = sum(weights)
    exact = [extra * w / wsum for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(k), key=lambda i: (-(exact[i] - shares[i]), tie_break[i]))
    for i in order[: extra - sum(shares)]:
        shares[i] += 1
    return [s + 1 for s in shares]


def path_weights(logprobs: Sequence[float], policy: Policy, temperature: float) -> list[float]:
    """Divergence weights of paths with (summed or mean) log-probabilities ``logprobs``."""
    if policy == "fixed":
        return [1.0] * len(logprobs)
    sign = -1.0 if policy == "low_prob" else 1.0
    low = min(logprobs)
    logits = [sign * (lp - low) / temperature for lp in logprobs]
    top = max(logits)
    return [math.exp(x - top) for x in logits]


class TreeGrowth(BaseModel):
    """What :func:`grow` did: leaves in finishing order (a leaf sampled ``m`` times listed ``m``
    times), rounds, fallbacks and live paths per round."""

    leaf_ids: list[int]
    rounds: int
    fallbacks: int
    live_per_round: list[int]
    first_divergence: int
    stopped_by_budget: bool


async def grow(ctx: SearchContext, width: int, *, final: Stop, segment_tokens: int, max_depth: int = 14,
               divergence: int = 2, first_divergence: int | tuple[int, int] = (2, 8), policy: Policy = "fixed",
               div_temperature: float = 1.0, normalize: bool = False, fallback: Fallback = "random",
               temperature: float = 1.0, top_p: float = 1.0,
               answer_complete: Callable[[str], bool] | None = None,
               repetition: tuple[int, int] | None = (32, 8), budget: Budget | None = None) -> TreeGrowth:
    """Grow ``ctx.tree`` by TreePO segment sampling until it has ``width`` finished leaves (see the
    module docstring), or until ``budget`` runs out. The options are those of :class:`GrowOptions`,
    already validated (the strategy and :func:`rollout` validate them)."""
    if not isinstance(width, int) or width < 1:
        raise ReasonError("width", f"must be a positive integer (got {width!r})", "grow to 1 or more leaves")
    tree, rng = ctx.tree, ctx.rng
    if isinstance(first_divergence, int):
        first = first_divergence
    else:
        low, high = first_divergence
        first = rng.randint(low, max(low, high))
    sampling = Sampling(temperature=temperature, top_p=top_p)
    response_cap = final.max_tokens
    alloc: list[tuple[Node, int]] = [(tree.root, max(1, min(first, width)))]
    paths: list[Node] = [tree.root]  # the paths the allocation continues, one entry per path
    finished: list[Node] = []  # one entry per finished leaf-sample
    live_per_round: list[int] = []
    rounds = fallbacks = 0
    stopped = False
    while alloc:
        if budget is not None and budget.exhausted(tree, ctx.started):
            stopped = True
            break
        rounds += 1
        live_per_round.append(sum(k for _, k in alloc))
        stops = [_segment_stop(final, segment_tokens, response_cap, _response_len(tree, node)) for node, _ in alloc]
        grown = await asyncio.gather(*(ctx.expand(node, k, stop, sampling) for (node, k), stop in zip(alloc, stops)))
        live: list[Node] = []  # one entry per sample: a merged child sampled m times is m live paths
        done_now = 0
        for child in (c for kids in grown for c in kids):
            reason = _finish(tree, child, max_depth, answer_complete, repetition, response_cap)
            if reason is None:
                live.append(child)
            else:
                child.finish_reason = reason
                finished.append(child)
                done_now += 1
        room = width - len(finished)
        if live:
            total = min(room, divergence * (len(live) + done_now))
            lps = [_path_logprob(tree, n, normalize) for n in live]
            shares = split_children(total, path_weights(lps, policy, div_temperature), [rng.random() for _ in live])
            alloc, paths = _per_node(live, shares), live
        elif room > 0 and finished:
            fallbacks += 1
            alloc = _fallback(tree, finished, room, divergence, fallback, rng)
            paths = [node for node, _ in alloc]
        else:
            alloc = []
    leaf_ids = [n.id for n in finished]
    if stopped:  # the budget ran out: live paths are what the search has
        leaf_ids += [node.id for node in paths]
    return TreeGrowth(leaf_ids=leaf_ids, rounds=rounds, fallbacks=fallbacks, live_per_round=live_per_round,
                      first_divergence=first, stopped_by_budget=stopped)


def _per_node(paths: Sequence[Node], shares: Sequence[int]) -> list[tuple[Node, int]]:
    """The children each distinct node gets: the sum of its paths' shares (first-seen order), so a
    merged node standing for several paths is expanded once for all of them."""
    total: dict[Node, int] = {}
    for node, k in zip(paths, shares):
        total[node] = total.get(node, 0) + k
    return list(total.items())


def _response_len(tree: Tree, node: Node) -> int:
    return sum(len(n.token_ids) for n in tree.path(node)[1:])


def _segment_stop(final: Stop, segment_tokens: int, cap: int | None, used: int) -> Stop:
    update: dict[str, Any] = {"segment_tokens": segment_tokens}
    if cap is not None:
        update["max_tokens"] = max(1, cap - used)
    return final.model_copy(update=update)


def _finish(tree: Tree, child: Node, max_depth: int, answer_complete: Callable[[str], bool] | None,
            repetition: tuple[int, int] | None, cap: int | None) -> FinishReason | None:
    """Why the path ending at ``child`` stops now, or None to go on."""
    if child.finish_reason in ENGINE_ENDS:
        return child.finish_reason
    if cap is not None and _response_len(tree, child) >= cap:
        return "length"
    text = tree.text(child)
    if answer_complete is not None and answer_complete(text):
        return "answer"
    if child.depth >= max_depth:
        return "max_depth"
    if repetition is not None and has_repetition(text, *repetition):
        return "repetition"
    return None


def _token_logprobs(node: Node) -> list[float]:
    """The node's per-token logprobs: the model's own, or the sampling distribution's where its
    engine reported only those (a server with vLLM's ``processed_logprobs``)."""
    return node.logprobs or node.sampling_logprobs


def _path_logprob(tree: Tree, node: Node, normalize: bool) -> float:
    lps = [lp for n in tree.path(node)[1:] for lp in _token_logprobs(n)]
    if not lps:
        return 0.0
    return sum(lps) / len(lps) if normalize else sum(lps)


def _fallback(tree: Tree, finished: list[Node], room: int, divergence: int, how: Fallback,
              rng) -> list[tuple[Node, int]]:
    """Re-branch finished paths from a segment boundary (see the module docstring)."""
    order = sorted(finished, key=lambda n: (PRIORITY.get(n.finish_reason, 5) if n.finish_reason else 5, n.id))
    alloc: dict[Node, int] = {}
    for leaf in order:
        if room <= 0:
            break
        path = tree.path(leaf)
        if how == "random":
            cut = path[rng.randrange(len(path) - 1)]
        else:
            worst = min(path[1:], key=lambda n: min(_token_logprobs(n), default=0.0))
            cut = worst.parent
        k = min(divergence, room)
        alloc[cut] = alloc.get(cut, 0) + k
        room -= k
    return list(alloc.items())


def leaf_rewards_default(ctx: SearchContext, leaves: list[Node], answers: list[str | None],
                         scores: list[float | None]) -> list[float]:
    """Inference-time rewards: the PRM score when there is one, else agreement with the majority."""
    if all(s is not None for s in scores) and leaves:
        return [float(s) for s in scores]  # type: ignore[arg-type]
    counts = Counter(a for a in answers if a is not None)
    top = counts.most_common(1)[0][0] if counts else None
    return [1.0 if a is not None and a == top else 0.0 for a in answers]


@strategies.register("treepo", options=TreePOOptions)
async def treepo(ctx: SearchContext, budget: Budget, *, extract: Callable[[str], str | None], final: Stop,
                 segment_tokens: int = 512, max_depth: int = 14, divergence: int = 2,
                 first_divergence: int | tuple[int, int] = (2, 8), policy: Policy = "fixed",
                 div_temperature: float = 1.0, normalize: bool = False, fallback: Fallback = "random",
                 temperature: float = 0.8, top_p: float = 1.0, select: Selection = "majority",
                 answer_complete: Callable[[str], bool] | None = None,
                 repetition: tuple[int, int] | None = (32, 8)):
    """TreePO sampling with ``budget.n`` leaves; the answer by majority (or PRM / weighted vote).
    ``info["advantages"]`` holds both advantage variants, aligned with the candidates."""
    if select != "majority" and ctx.prm is None:
        raise ReasonError("prm", f"treepo with select={select!r} needs a PRM", "pass --prm or use select=majority")
    growth = await grow(ctx, budget.n, final=final, segment_tokens=segment_tokens, max_depth=max_depth,
                        divergence=divergence, first_divergence=first_divergence, policy=policy,
                        div_temperature=div_temperature, normalize=normalize, fallback=fallback,
                        temperature=temperature, top_p=top_p, answer_complete=answer_complete,
                        repetition=repetition, budget=budget)
    tree = ctx.tree
    leaves = [tree.node(i) for i in growth.leaf_ids]  # a leaf sampled m times is listed m times
    scores: list[float | None] = list(await ctx.score(leaves)) if ctx.prm is not None else [None] * len(leaves)
    answers = [extract(tree.text(n)) for n in leaves]
    rewards = leaf_rewards_default(ctx, leaves, answers, scores)
    paths = [[n.id for n in tree.path(leaf)] for leaf in leaves]
    advantages = {w: tree_advantages(paths, rewards, w)[0] for w in WEIGHTINGS}
    firsts: dict[Node, int] = {}
    for i, leaf in enumerate(leaves):  # the candidates: one per distinct leaf, in first-seen order
        firsts.setdefault(leaf, i)
    order = list(firsts.values())
    return finish(ctx, "treepo", leaves, scores, choose(answers, scores, select), extract,
                  rewards=[rewards[i] for i in order],
                  advantages={w: [adv[i] for i in order] for w, adv in advantages.items()},
                  **growth.model_dump(exclude={"leaf_ids"}))


def rollout(engine: Engine, prompts: Sequence[Any], *, n: int = 16, reward: Callable[[int, str], float] | None = None,
            answers: Sequence[str] | None = None, verifier: Verifier | str | None = None, seed: int = 0,
            weighting: str = "group_size", segment_tokens: int = 512, max_tokens: int | None = 1024,
            temperature: float = 1.0, logprobs: LogprobsMode = "raw",
            sampling: Sampling | Mapping[str, Any] | None = None, **options: Any) -> list[RolloutRecord]:
    """TreePO rollouts for ``prompts`` (text, chat messages or token ids), ``n`` leaf-samples each,
    grown together over ``engine``. Rewards come from ``reward(prompt_index, completion_text)``, or
    from ``verifier`` (an :class:`~rewards.base.OutcomeVerifier`, or a verifier name such as
    ``"arith"``) against ``answers``. ``options`` go to :func:`grow` (``max_depth``, ``divergence``,
    ``policy``, ...: :class:`GrowOptions`, validated here). ``logprobs`` is the kind the records
    carry (:data:`~search.records.LogprobsMode`); ``sampling`` the run's filters and penalties
    (:func:`~reason.core.engine.base.run_sampling`). Returns the records of every prompt in order, one
    per leaf-sample (a leaf sampled ``m`` times gives ``m`` records), in finishing order."""
    grow_options = GrowOptions.make("treepo", {"segment_tokens": segment_tokens, "temperature": temperature, **options})
    check_logprobs_mode(logprobs)
    verifier = reward_source(reward, answers, verifier, len(prompts))
    runner = Runner(engine)
    defaults = run_sampling(sampling)
    contexts = [runner.context(p, seed=seed + i, sampling=defaults) for i, p in enumerate(prompts)]
    final = Stop(max_tokens=max_tokens)
    growths = runner.run([grow(ctx, n, final=final, **grow_options.values()) for ctx in contexts])
    records: list[RolloutRecord] = []
    for index, (ctx, growth) in enumerate(zip(contexts, growths)):
        leaves = [ctx.tree.node(i) for i in growth.leaf_ids]
        records += leaf_records(ctx.tree, leaves, index, reward=reward, answers=answers, verifier=verifier,
                                weighting=weighting, logprobs=logprobs)
    return records
