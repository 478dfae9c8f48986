"""Run a named strategy on problems of one domain, many at once over one engine (what ``reason solve``,
``reason eval`` and the rollouts call; the name-based shortcuts live in :mod:`reason.shortcuts`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reason.core.context import Runner, SearchContext
from reason.core.engine.base import Engine, Sampling, Stop, run_sampling
from reason.core.errors import ReasonError
from rewards.scoring import NodeScorer, NodeValuer
from search import strategies
from search.budget import Budget
from search.domain import Domain, Problem
from search.options import StrategyOptions
from search.result import SearchResult


def make_budget(budget: int | Budget, tokens: int | None = None) -> Budget:
    """A :class:`Budget` from an int (``n``) or a Budget, with ``tokens`` (generated tokens per
    problem) as its token cap when given; ``n < 1`` or ``tokens < 1`` is a one-line error."""
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ReasonError("budget-tokens", f"must be a positive number of tokens (got {tokens!r})",
                          "use e.g. --budget-tokens 2000")
    if isinstance(budget, Budget):
        return budget if tokens is None else budget.model_copy(update={"max_tokens": tokens})
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ReasonError("budget", f"must be a positive number of solutions (got {budget!r})", "use e.g. --budget 16")
    return Budget(n=budget, max_tokens=tokens)


def strategy_options(name: str) -> list[str]:
    """The options strategy ``name`` takes: the fields of its options model, sorted."""
    return strategies.options(name).names()


def check_options(name: str, options: Mapping[str, Any], hints: Mapping[str, Any] | None = None) -> StrategyOptions:
    """Validate ``options`` for strategy ``name`` into its options model, raising a one-line
    :class:`ReasonError` for an unknown strategy or option (field ``option``) or a bad value (the
    option's name). ``hints`` fill the options the strategy has and ``options`` leave out; the
    strategies without them ignore them. The command line and the server call this before any
    model loads; :func:`solve_problems` calls it again with the domain's hints."""
    return strategies.options(name).make(name, options, hints)


def solve_problems(
    engine: Engine,
    problems: Sequence[Problem],
    *,
    domain: Domain,
    strategy: str = "best_of_n",
    budget: int | Budget = 16,
    budget_tokens: int | None = None,
    prm: Any = None,
    value: Any = None,
    aggregation: str = "last",
    merge: bool = True,
    seeds: Sequence[int] | None = None,
    prompts: Sequence[Any] | None = None,
    max_tokens: int = 1024,
    temperature: float | None = None,
    sampling: Sampling | Mapping[str, Any] | None = None,
    on_result: Callable[[int, SearchResult], None] | None = None,
    **params: Any,
) -> list[SearchResult]:
    """Run ``strategy`` on every problem concurrently over one engine.

    ``prm`` / ``value`` are loaded scorers (``rewards.catalog.load_prm`` / ``load_value``) or None
    (``value`` may also be a ready :class:`~rewards.scoring.NodeValuer`, e.g. one that smooths);
    ``aggregation`` is how the PRM's step scores make one score (``last``, ``min``, ``prod``,
    ``mean``, or ``model``: the PRM scores the whole solution as one step). ``budget_tokens`` caps
    the tokens generated per problem (the budget's ``max_tokens``): every strategy stops within it
    and returns its best answer so far. ``merge=False`` keeps identical siblings apart (only to
    measure what merging saves); the domain's ``state_key`` merges states that differ only in form.
    ``prompts`` (text, chat messages or token ids, one per problem) default to the question as a
    user message when the tokenizer has a chat template, else the problem's prompt. ``seeds`` default
    to 0, 1, 2, .... ``on_result(i, result)`` is called as each problem finishes, so a caller can
    keep results even if a later problem fails. ``temperature`` is the sampling temperature of
    strategies that sample (``greedy`` ignores it); ``sampling`` (a :class:`Sampling` or its fields,
    e.g. ``{"top_p": 0.95, "min_p": 0.05}``) sets the filters and penalties of every draw the
    strategy leaves them off in (its temperature stays the strategy's). ``params`` are the strategy's options (see
    :func:`strategy_options`), validated before anything runs: an unknown name or a bad value is a
    one-line :class:`ReasonError`. The domain's step delimiter, segment length and answer check
    fill the options the strategy has and ``params`` leave out.
    """
    run = strategies.get(strategy)
    hints = {"delimiter": domain.delimiter, "segment_tokens": domain.segment_tokens,
             "answer_complete": domain.answer_complete, "temperature": temperature}
    options = check_options(strategy, params, {k: v for k, v in hints.items() if v is not None}).values()
    plan = make_budget(budget, budget_tokens)
    defaults = run_sampling(sampling)
    runner = Runner(engine)
    prm_scorer = NodeScorer(prm, delimiter=domain.delimiter, aggregation=aggregation) if prm is not None else None
    valuer = value if isinstance(value, NodeValuer) or value is None else NodeValuer(value)
    if prompts is None:
        chat = engine.has_chat_template()
        prompts = [[{"role": "user", "content": p.question}] if chat else p.prompt for p in problems]
    seeds = list(range(len(problems))) if seeds is None else list(seeds)
    contexts = [
        runner.context(prompt, seed=s, meta={"question": p.question, "id": p.id, "answer": p.answer},
                       prm=prm_scorer, value=valuer, merge=merge, state_key=domain.state_key,
                       token_budget=plan.max_tokens, sampling=defaults)
        for p, prompt, s in zip(problems, prompts, seeds)
    ]
    final = Stop(max_tokens=max_tokens)

    async def one(i: int, ctx: SearchContext) -> SearchResult:
        result = await run(ctx, plan, extract=domain.extract_answer, final=final, **options)
        result.ledger.wall_seconds = time.perf_counter() - ctx.started
        if on_result is not None:
            on_result(i, result)
        return result

    return runner.run([one(i, ctx) for i, ctx in enumerate(contexts)])
