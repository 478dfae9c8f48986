"""``solve``: run a named strategy on problems, many at once over one engine (the library twin of
``reason solve``)."""

from __future__ import annotations

import inspect
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


def strategy_options(name: str) -> list[str]:
    """The keyword options strategy ``name`` accepts (beyond the ones every strategy gets)."""
    fn = strategies.get(name)
    fn = getattr(fn, "options_from", fn)
    common = {"extract", "final"}
    return sorted(p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in common)


def check_options(name: str, options: dict[str, Any]) -> None:
    """A one-line error for an option strategy ``name`` does not take."""
    known = strategy_options(name)
    for key in options:
        if key not in known:
            raise ReasonError("option", f"strategy {name!r} has no option {key!r}", f"use one of: {', '.join(known) or 'none'}")


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
    hints = {"delimiter": domain.delimiter, "segment_tokens": domain.segment_tokens,
             "answer_complete": domain.answer_complete}
    options = {**hints, **params}
    results = runner.run([run(ctx, plan, extract=domain.extract_answer, final=final, **options) for ctx in contexts])
    for r in results:
        r.ledger.wall_seconds = r.tree.ledger.wall_seconds or (time.perf_counter() - started)
    return results


def solve(engine: Engine, question: str, **options: Any) -> SearchResult:
    """Solve one question (see :func:`solve_many`)."""
    return solve_many(engine, [question], **options)[0]
