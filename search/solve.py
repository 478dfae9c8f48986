"""``solve``: run a named strategy on problems, many at once over one engine (the library twin of
``reason solve``)."""

from __future__ import annotations

import time
from typing import Any, Sequence

from reason.context import Runner
from reason.engine.base import Engine, Stop
from reason.errors import ReasonError
from search import strategies
from search.budget import Budget
from search.result import SearchResult


def make_budget(budget: int | Budget) -> Budget:
    """A :class:`Budget` from an int (``n``) or a Budget; ``n < 1`` is a one-line error."""
    if isinstance(budget, Budget):
        return budget
    if not isinstance(budget, int) or budget < 1:
        raise ReasonError("budget", f"must be a positive number of solutions (got {budget!r})", "use e.g. --budget 16")
    return Budget(n=budget)


def solve_many(
    engine: Engine,
    questions: Sequence[str],
    *,
    strategy: str = "best_of_n",
    budget: int | Budget = 16,
    suite: str = "arith",
    prm: Any = None,
    value: Any = None,
    seed: int = 0,
    max_tokens: int = 1024,
    **params: Any,
) -> list[SearchResult]:
    """Solve every question with ``strategy`` concurrently (their requests batch together).

    ``prm`` / ``value`` are loaded scorers (``rewards.catalog.load_prm`` / ``load_value``) or None.
    """
    from rewards.scoring import NodeScorer, NodeValuer
    from tasks.domains import domains

    run = strategies.get(strategy)
    plan = make_budget(budget)
    domain = domains.get(suite)
    problems = [domain.make_problem(q) for q in questions]
    runner = Runner(engine)
    prm_scorer = NodeScorer(prm, delimiter=domain.delimiter) if prm is not None else None
    valuer = NodeValuer(value) if value is not None else None
    contexts = [
        runner.context([{"role": "user", "content": p.question}] if getattr(engine, "tokenizer", None) is not None
                       and getattr(engine.tokenizer, "chat_template", None) else p.prompt,
                       seed=seed + i, meta={"question": p.question, "id": p.id, "answer": p.answer},
                       prm=prm_scorer, value=valuer)
        for i, p in enumerate(problems)
    ]
    final = Stop(max_tokens=max_tokens)
    started = time.perf_counter()
    results = runner.run([run(ctx, plan, extract=domain.extract_answer, final=final, delimiter=domain.delimiter, **params)
                          for ctx in contexts])
    for r in results:
        r.ledger.wall_seconds = r.tree.ledger.wall_seconds or (time.perf_counter() - started)
    return results


def solve(engine: Engine, question: str, **options: Any) -> SearchResult:
    """Solve one question (see :func:`solve_many`)."""
    return solve_many(engine, [question], **options)[0]
