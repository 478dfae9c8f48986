"""RL rollout records and the advantages they carry, shared by every strategy's rollouts and the
trainer adapters.

A :class:`RolloutRecord` is one leaf as an RL trainer wants it: prompt ids, completion ids,
per-token logprobs, segment boundaries (node ends), the tree path, the reward (a user function, or
a verifier against answers) and tree advantages. :func:`tree_advantages` is TreePO's segment-level
advantage: for leaf ``i`` and depth ``d``, ``G_d(i)`` is the set of leaves sharing ``i``'s first
``d`` segments and ``A_{i,d} = R_i - mean(R_j for j in G_d(i))`` (counted at ``d = 0`` and wherever
``|G_d(i)| > 1``), aggregated as ``sum_d A_{i,d} |G_d(i)| / sum_d |G_d(i)|`` (``"group_size"``) or
``mean_d A_{i,d}`` (``"average"``); best-of-N leaves thus get plain group-relative advantages.
:func:`segment_advantages` credits each segment, for trainers that take per-token advantages.

Multiplicity: identical samples are one tree node (a merged node's ``count``, a candidate's
``count``), but each sample is its own member of the group. A leaf that stands for ``k`` samples
is therefore listed ``k`` times (:func:`expand_counts`) before the records and advantages are made:
it yields ``k`` records with the same path, and every mean above counts it ``k`` times.

Logprobs: a record carries one kind, named by its ``logprobs_mode`` (:data:`LogprobsMode`):
``"raw"``, the model's own log-probability of each token (temperature 1, unfiltered: the nodes'
``logprobs``), or ``"sampling"``, the log-probability under the distribution the token was drawn
from (temperature, top-k and top-p applied, 0 for a greedy pick: the nodes' ``sampling_logprobs``).
Trainers that correct for the gap between the sampler and the trained policy by importance sampling
(TRL's GRPO with vLLM, verl's and OpenRLHF's rollout corrections) compare against the latter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar, get_args

from pydantic import BaseModel

from reason.core.errors import ReasonError
from reason.core.scorers import Verifier
from reason.core.tree import FinishReason, Node, Tree
from rewards import verifiers
from rewards.base import VerifyItem

Reward = Callable[[int, str], float]
T = TypeVar("T")
WEIGHTINGS = ("group_size", "average")
LogprobsMode = Literal["raw", "sampling"]
"""Which per-token logprobs a record carries (see the module docstring)."""
LOGPROBS_MODES: tuple[LogprobsMode, ...] = get_args(LogprobsMode)


def tree_advantages(paths: Sequence[Sequence[int]], rewards: Sequence[float],
                    weighting: str = "group_size") -> tuple[list[float], list[list[float | None]]]:
    """TreePO's segment-level advantages (module docstring) of leaves given by their ``paths``
    (node ids from the root to the leaf). Returns the aggregated advantage of each leaf and its
    per-depth ``A_{i,d}`` (None where the subgroup is only the leaf itself)."""
    if weighting not in WEIGHTINGS:
        raise ReasonError("weighting", f"unknown advantage weighting {weighting!r}", f"use one of {', '.join(WEIGHTINGS)}")
    if len(paths) != len(rewards):
        raise ReasonError("rewards", f"has {len(rewards)} entries for {len(paths)} leaves", "give one reward per leaf")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, path in enumerate(paths):
        for d in range(len(path) - 1):
            groups.setdefault(tuple(path[: d + 1]), []).append(i)
    aggregated, per_depth = [], []
    for i, path in enumerate(paths):
        terms: list[tuple[float, int]] = []
        depths: list[float | None] = []
        for d in range(max(len(path) - 1, 1)):
            members = groups.get(tuple(path[: d + 1]), [i])
            if d > 0 and len(members) < 2:
                depths.append(None)
                continue
            adv = rewards[i] - sum(rewards[j] for j in members) / len(members)
            terms.append((adv, len(members)))
            depths.append(adv)
        if weighting == "group_size":
            aggregated.append(sum(a * g for a, g in terms) / sum(g for _, g in terms))
        else:
            aggregated.append(sum(a for a, _ in terms) / len(terms))
        per_depth.append(depths)
    return aggregated, per_depth


def segment_advantages(paths: Sequence[Sequence[int]], rewards: Sequence[float]) -> list[list[float]]:
    """Per-segment credit for leaves given by their ``paths`` (node ids from the root to the leaf):
    segment ``k`` of a leaf (node ``path[k + 1]``) gets the mean reward of the leaves below that node
    minus the mean reward of the leaves below its parent, a Monte-Carlo estimate of how much taking
    that segment changed the expected reward. A leaf's segment advantages sum to its reward minus the
    mean of all leaves, so a one-segment tree (independent samples) gives GRPO's unnormalised
    advantage, and segments every sibling shares get zero."""
    if len(paths) != len(rewards):
        raise ReasonError("rewards", f"has {len(rewards)} entries for {len(paths)} leaves", "give one reward per leaf")
    below: dict[tuple[int, ...], list[float]] = {}
    for path, r in zip(paths, rewards):
        for d in range(1, len(path) + 1):
            below.setdefault(tuple(path[:d]), []).append(float(r))
    mean = {key: sum(v) / len(v) for key, v in below.items()}
    return [[mean[tuple(path[: k + 2])] - mean[tuple(path[: k + 1])] for k in range(len(path) - 1)] for path in paths]


class RolloutRecord(BaseModel):
    """One leaf of a search tree as an RL trainer wants it.

    ``segment_ends[k]`` is the offset in ``completion_ids`` where segment ``k`` ends; ``path`` is
    the node ids from the root to the leaf (leaves sharing a path prefix shared those segments);
    ``depth_advantages[d]`` is ``A_{i,d}`` (None where the leaf's subgroup at depth ``d`` is itself);
    ``segment_advantages[k]`` is segment ``k``'s credit from :func:`segment_advantages`;
    ``logprobs`` are of the kind ``logprobs_mode`` names (:data:`LogprobsMode`).
    """

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    logprobs_mode: LogprobsMode
    segment_ends: list[int]
    path: list[int]
    finish_reason: FinishReason | None
    text: str
    reward: float
    advantage: float
    depth_advantages: list[float | None]
    segment_advantages: list[float]

    def token_advantages(self, per: str = "segment") -> list[float]:
        """One advantage per completion token: each token gets its segment's advantage
        (``per="segment"``) or the leaf's aggregated tree advantage (``per="leaf"``)."""
        if per == "leaf":
            return [self.advantage] * len(self.completion_ids)
        if per != "segment":
            raise ReasonError("per", f"unknown advantage granularity {per!r}", "use 'segment' or 'leaf'")
        out: list[float] = []
        for end, adv in zip(self.segment_ends, self.segment_advantages):
            out += [adv] * (end - len(out))
        return out


def reward_source(reward: Reward | None, answers: Sequence[str] | None, verifier: Verifier | str | None,
                  n_prompts: int) -> Verifier | None:
    """Check the reward arguments; returns the verifier object (a name is looked up), or None with
    ``reward``."""
    if reward is None and (answers is None or verifier is None):
        raise ReasonError("reward", "rollout needs rewards", "pass reward=fn(prompt_index, text) or answers= and verifier=")
    if answers is not None and len(answers) != n_prompts:
        raise ReasonError("answers", f"has {len(answers)} entries for {n_prompts} prompts", "give one answer per prompt")
    if isinstance(verifier, str):
        return verifiers.get(verifier)()
    return verifier


def check_logprobs_mode(mode: str) -> None:
    """Raise :class:`ReasonError` unless ``mode`` is a :data:`LogprobsMode`."""
    if mode not in LOGPROBS_MODES:
        raise ReasonError("logprobs", f"unknown kind {mode!r}", f"use one of {', '.join(LOGPROBS_MODES)}")


def node_logprobs(node: Node, mode: LogprobsMode) -> list[float]:
    """``node``'s per-token logprobs of kind ``mode``; a one-line error when its engine did not
    report that kind."""
    lps = node.logprobs if mode == "raw" else node.sampling_logprobs
    if len(lps) == len(node.token_ids):
        return list(lps)
    if mode == "sampling":
        raise ReasonError("logprobs", "the engine reported no sampling_logprobs (the distribution tokens were drawn from)",
                          "pass logprobs='raw', or use an engine that reports them (hf, reason serve, "
                          "vLLM with logprobs_mode='processed_logprobs')")
    raise ReasonError("logprobs", "the engine reported no raw logprobs (its server reports processed ones)",
                      "pass logprobs='sampling', or serve with logprobs_mode='raw_logprobs'")


def expand_counts(items: Sequence[T], counts: Sequence[int]) -> list[T]:
    """Each of ``items`` repeated its count times, in order: one entry per sample."""
    return [item for item, k in zip(items, counts) for _ in range(k)]


def leaf_records(tree: Tree, leaves: Sequence[Node], index: int, *, reward: Reward | None, answers: Sequence[str] | None,
                 verifier: Verifier | None, weighting: str = "group_size",
                 logprobs: LogprobsMode = "raw") -> list[RolloutRecord]:
    """The records of one prompt's ``leaves`` (in the given order), one per entry: a leaf that
    stands for ``k`` samples must be listed ``k`` times (:func:`expand_counts`), so that it gives
    ``k`` records and counts ``k`` times in the advantages. ``logprobs`` is the kind the records
    carry (a one-line error when the engine did not report it)."""
    check_logprobs_mode(logprobs)
    paths = [tree.path(leaf) for leaf in leaves]
    per_node = {n.id: node_logprobs(n, logprobs) for path in paths for n in path[1:]}
    texts = [tree.text(leaf) for leaf in leaves]
    if reward is not None:
        rewards = [float(reward(index, t)) for t in texts]
    else:
        assert answers is not None and verifier is not None
        question = tree.root.text
        rewards = [float(r) for r in verifier.verify_batch([VerifyItem(question, t, str(answers[index])) for t in texts])]
    ids_paths = [[n.id for n in p] for p in paths]
    adv, per_depth = tree_advantages(ids_paths, rewards, weighting)
    per_segment = segment_advantages(ids_paths, rewards)
    records = []
    for leaf, path, text, r, a, ad, sa in zip(leaves, paths, texts, rewards, adv, per_depth, per_segment):
        ends, ids, lps = [], [], []
        for node in path[1:]:
            ids += node.token_ids
            lps += per_node[node.id]
            ends.append(len(ids))
        records.append(RolloutRecord(prompt_index=index, prompt_ids=list(tree.root.token_ids), completion_ids=ids,
                                     logprobs=lps, logprobs_mode=logprobs, segment_ends=ends,
                                     path=[n.id for n in path], finish_reason=leaf.finish_reason, text=text, reward=r,
                                     advantage=a, depth_advantages=ad, segment_advantages=sa))
    return records


def exactly(leaves: Sequence[T], n: int) -> list[T]:
    """``n`` leaves (or records): the first ``n``, or all of them repeated in order when there are
    fewer; none is a one-line error, not an empty group."""
    if not leaves:
        raise ReasonError("n", "the search finished no leaf", "raise max_tokens or the budget")
    return [leaves[i % len(leaves)] for i in range(n)]
