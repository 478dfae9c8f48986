"""The public shortcuts, one call each: :func:`generate` (``reason generate``), :func:`solve` /
:func:`solve_many` (``reason solve``) and :func:`rollout` (RL records from any strategy). They
resolve names (a suite's domain, a verifier) through the task registry and hand the work to the
layers below: the engine, :func:`search.solve.solve_problems` and :mod:`search.records`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from reason.core.engine.base import Engine, Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger
from reason.core.scorers import Verifier
from reason.core.tree import FinishReason
from search.records import (
    LogprobsMode,
    Reward,
    RolloutRecord,
    check_logprobs_mode,
    exactly,
    expand_counts,
    leaf_records,
    reward_source,
)
from search.result import SearchResult
from search.solve import check_options, solve_problems
from search.treepo import rollout as treepo_rollout
from tasks.registry import get_domain


class Sample(BaseModel):
    """One completion: its text, token ids, per-token logprobs and why it ended."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason | None


class GenerateResult(BaseModel):
    """The completions of one :func:`generate` call and the work they took."""

    samples: list[Sample]
    ledger: Ledger


def generate(
    engine: Engine,
    prompt: str | Sequence[dict[str, str]] | Sequence[int],
    *,
    n: int = 1,
    sampling: Sampling | None = None,
    stop: Stop | None = None,
) -> GenerateResult:
    """Sample ``n`` completions of ``prompt``, all batched in one expansion of a fresh tree."""
    started = time.perf_counter()
    tree = engine.new_tree(prompt)
    children = engine.expand(tree, tree.root, n, stop or Stop(), sampling or Sampling())
    samples = [Sample(text=c.text, token_ids=c.token_ids, logprobs=c.logprobs, finish_reason=c.finish_reason) for c in children]
    ledger = tree.ledger.model_copy()
    ledger.wall_seconds = time.perf_counter() - started
    engine.release(tree)
    return GenerateResult(samples=samples, ledger=ledger)


def solve_many(engine: Engine, questions: Sequence[str], *, suite: str = "arith", seed: int = 0,
               **options: Any) -> list[SearchResult]:
    """Solve every question of domain ``suite`` concurrently (their requests batch together); the
    i-th gets seed ``seed + i``. ``options`` are those of :func:`search.solve.solve_problems`."""
    domain = get_domain(suite)
    problems = [domain.make_problem(q) for q in questions]
    return solve_problems(engine, problems, domain=domain, seeds=[seed + i for i in range(len(problems))], **options)


def solve(engine: Engine, question: str, **options: Any) -> SearchResult:
    """Solve one question (see :func:`solve_many`)."""
    return solve_many(engine, [question], **options)[0]


def rollout(engine: Engine, prompts: Sequence[Any], *, strategy: str = "treepo", n: int = 16,
            reward: Reward | None = None, answers: Sequence[str] | None = None,
            verifier: Verifier | str | None = None, seed: int = 0,
            suite: str = "arith", weighting: str = "group_size", exact_n: bool = True, temperature: float = 1.0,
            max_tokens: int = 1024, prm: Any = None, value: Any = None, logprobs: LogprobsMode = "raw",
            sampling: Any = None, **options: Any) -> list[RolloutRecord]:
    """Rollout records for RL trainers from ``prompts`` (text, chat messages or token ids): one tree
    per prompt grown by ``strategy`` at budget ``n`` (TreePO's segment tree by default), every
    prompt's search together over ``engine``, one :class:`~search.records.RolloutRecord` per
    sample: identical samples are one merged node in the tree, and a leaf (or candidate) that
    stands for ``k`` samples gives ``k`` records with the same path, each a member of the group in
    the advantages. ``exact_n`` makes every prompt yield exactly ``n`` records, as GRPO-style
    trainers need a fixed group size. ``logprobs`` is the kind the records carry: ``"raw"`` (the
    model's own, temperature 1, unfiltered) or ``"sampling"`` (the distribution each token was
    drawn from: temperature, top-k and top-p applied), the one importance-sampling corrections
    compare against; asking for a kind the engine did not report is a one-line error. ``suite``
    names the domain (step delimiter, answer extraction); ``prm`` / ``value`` are loaded scorers
    for the strategies that use them; ``sampling`` is the run's filters and penalties (e.g.
    ``{"top_p": 0.95}``, every draw; the strategy keeps its temperature); ``options`` go to the
    strategy."""
    check_logprobs_mode(logprobs)
    if strategy == "treepo":
        if prm is not None or value is not None:
            raise ReasonError("prm", "TreePO rollouts score leaves by reward only", "drop prm/value, or pick another strategy")
        records = treepo_rollout(engine, prompts, n=n, reward=reward, answers=answers, verifier=verifier, seed=seed,
                                 weighting=weighting, max_tokens=max_tokens, temperature=temperature,
                                 logprobs=logprobs, sampling=sampling, **options)
        if not exact_n:
            return records
        return [r for index in range(len(prompts))
                for r in exactly([r for r in records if r.prompt_index == index], n)]
    check_options(strategy, options)
    verifier = reward_source(reward, answers, verifier, len(prompts))
    domain = get_domain(suite)
    problems = [domain.make_problem(_question(engine, p)) for p in prompts]
    results = solve_problems(engine, problems, domain=domain, strategy=strategy, budget=n, prompts=list(prompts),
                             prm=prm, value=value, seeds=[seed + i for i in range(len(prompts))],
                             max_tokens=max_tokens, temperature=temperature, sampling=sampling, **options)
    records = []
    for index, result in enumerate(results):
        tree = result.tree
        # one entry per sample: a candidate standing for k samples (or particles) is k members
        leaves = expand_counts([tree.node(c.node_id) for c in result.candidates], [c.count for c in result.candidates])
        if exact_n:
            leaves = exactly(leaves, n)
        records += leaf_records(tree, leaves, index, reward=reward, answers=answers, verifier=verifier,
                                weighting=weighting, logprobs=logprobs)
    return records


def _question(engine: Engine, prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    items = list(prompt)
    if items and isinstance(items[0], dict):
        return str(items[-1].get("content", ""))
    return engine.decode(items)
