"""Rollouts for RL trainers: any strategy's leaves as plain records with rewards and advantages.

:func:`rollout` grows one tree per prompt with a search strategy (TreePO's segment tree by default)
and returns one :class:`~search.treepo.RolloutRecord` per leaf: prompt ids, completion ids, per-token
logprobs, segment boundaries (node ends), the tree path, the reward (a user function, or a verifier
against answers) and tree advantages (:func:`~search.treepo.tree_advantages`: leaves that share a
path prefix form subgroups, so best-of-N leaves get plain group-relative advantages and tree leaves
per-segment ones; :func:`~search.treepo.segment_advantages` credits each segment, for trainers that
take per-token advantages). ``exact_n`` makes every prompt yield exactly ``n`` records, as GRPO-style trainers
need a fixed group size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from reason.engine.base import Engine
from reason.errors import ReasonError
from reason.tree import Node, Tree
from search.treepo import RolloutRecord, segment_advantages, tree_advantages

Reward = Callable[[int, str], float]
T = TypeVar("T")


def reward_source(reward: Reward | None, answers: Sequence[str] | None, verifier: Any, n_prompts: int) -> Any:
    """Check the reward arguments; returns the verifier object (or None with ``reward``)."""
    if reward is None and (answers is None or verifier is None):
        raise ReasonError("reward", "rollout needs rewards", "pass reward=fn(prompt_index, text) or answers= and verifier=")
    if answers is not None and len(answers) != n_prompts:
        raise ReasonError("answers", f"has {len(answers)} entries for {n_prompts} prompts", "give one answer per prompt")
    if isinstance(verifier, str):
        from rewards import verifiers

        return verifiers.get(verifier)()
    return verifier


def leaf_records(tree: Tree, leaves: Sequence[Node], index: int, *, reward: Reward | None, answers: Sequence[str] | None,
                 verifier: Any, weighting: str = "group_size") -> list[RolloutRecord]:
    """The records of one prompt's ``leaves`` (in the given order; a leaf may repeat)."""
    from rewards.base import VerifyItem

    texts = [tree.text(leaf) for leaf in leaves]
    if reward is not None:
        rewards = [float(reward(index, t)) for t in texts]
    else:
        assert answers is not None
        question = tree.root.text
        rewards = [float(r) for r in verifier.verify_batch([VerifyItem(question, t, str(answers[index])) for t in texts])]
    paths = [tree.path(leaf) for leaf in leaves]
    ids_paths = [[n.id for n in p] for p in paths]
    adv, per_depth = tree_advantages(ids_paths, rewards, weighting)
    per_segment = segment_advantages(ids_paths, rewards)
    records = []
    for leaf, path, text, r, a, ad, sa in zip(leaves, paths, texts, rewards, adv, per_depth, per_segment):
        ends, ids, lps = [], [], []
        for node in path[1:]:
            ids += node.token_ids
            lps += node.logprobs
            ends.append(len(ids))
        records.append(RolloutRecord(prompt_index=index, prompt_ids=list(tree.root.token_ids), completion_ids=ids,
                                     logprobs=lps, segment_ends=ends, path=[n.id for n in path],
                                     finish_reason=leaf.finish_reason, text=text, reward=r, advantage=a,
                                     depth_advantages=ad, segment_advantages=sa))
    return records


def exactly(leaves: Sequence[T], n: int) -> list[T]:
    """``n`` leaves (or records): the first ``n``, or all of them repeated in order when there are
    fewer; none is a one-line error, not an empty group."""
    if not leaves:
        raise ReasonError("n", "the search finished no leaf", "raise max_tokens or the budget")
    return [leaves[i % len(leaves)] for i in range(n)]


def rollout(engine: Engine, prompts: Sequence[Any], *, strategy: str = "treepo", n: int = 16,
            reward: Reward | None = None, answers: Sequence[str] | None = None, verifier: Any = None, seed: int = 0,
            suite: str = "arith", weighting: str = "group_size", exact_n: bool = True, temperature: float = 1.0,
            max_tokens: int = 1024, prm: Any = None, value: Any = None, **options: Any) -> list[RolloutRecord]:
    """Rollout records for ``prompts`` (text, chat messages or token ids) from ``strategy`` at budget
    ``n``, every prompt's search grown together over ``engine`` (see the module docstring).
    ``suite`` names the domain (step delimiter, answer extraction); ``prm`` / ``value`` are loaded
    scorers for the strategies that use them; ``options`` go to the strategy."""
    if strategy == "treepo":
        from search.treepo import rollout as treepo_rollout

        if prm is not None or value is not None:
            raise ReasonError("prm", "TreePO rollouts score leaves by reward only", "drop prm/value, or pick another strategy")
        records = treepo_rollout(engine, prompts, n=n, reward=reward, answers=answers, verifier=verifier, seed=seed,
                                 weighting=weighting, max_tokens=max_tokens, temperature=temperature, **options)
        if not exact_n:
            return records
        return [r for index in range(len(prompts))
                for r in exactly([r for r in records if r.prompt_index == index], n)]
    from search.solve import check_options, solve_problems
    from tasks.domains import domains

    check_options(strategy, options)
    verifier = reward_source(reward, answers, verifier, len(prompts))
    domain = domains.get(suite)
    problems = [domain.make_problem(_question(engine, p)) for p in prompts]
    results = solve_problems(engine, problems, domain=domain, strategy=strategy, budget=n, prompts=list(prompts),
                             prm=prm, value=value,
                             seeds=[seed + i for i in range(len(prompts))], max_tokens=max_tokens,
                             temperature=temperature, **options)
    records = []
    for index, result in enumerate(results):
        tree = result.tree
        leaves = [tree.node(c.node_id) for c in result.candidates]
        if exact_n:
            leaves = exactly(leaves, n)
        records += leaf_records(tree, leaves, index, reward=reward, answers=answers, verifier=verifier,
                                weighting=weighting)
    return records


def _question(engine: Engine, prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    items = list(prompt)
    if items and isinstance(items[0], dict):
        return str(items[-1].get("content", ""))
    return engine.decode(items)
