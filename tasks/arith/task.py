"""The ``arith`` task in one place: its suite (generated test-split problems, levels selectable as
``arith:3`` or ``arith:1,2``), its domain, its exact scorers (the step-checking PRM and the answer
verifier) and the value model it bundles, and the bundled policy and value checkpoints."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError
from rewards import prms, value_models, verifiers
from rewards.base import ProcessRewardModel, ValueModel
from rewards.value import LMValueModel
from search.domain import Domain, Problem
from tasks.arith.problems import (
    LEVELS,
    STEP_DELIMITER,
    VALUE_PROMPT,
    generate,
    make_problem,
)
from tasks.arith.scorers import ArithPRM, ArithVerifier, final_answer
from tasks.registry import Task, tasks
from tasks.suite_files import SuiteProblems, problem_and_answer, read_jsonl

HERE = Path(str(files("tasks.arith")))
BUNDLED = {"policy": HERE / "model", "value": HERE / "value"}


def parse_levels(arg: str | None) -> list[int]:
    """Levels from ``"3"`` or ``"1,2,3"``; all levels when empty."""
    if not arg:
        return sorted(LEVELS)
    try:
        levels = [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
        raise ReasonError("suite", f"bad arith levels {arg!r}", "use e.g. arith:3 or arith:1,2") from None
    bad = [x for x in levels if x not in LEVELS]
    if bad or not levels:
        raise ReasonError("suite", f"unknown arith level {bad[0] if bad else arg!r}", f"use levels {sorted(LEVELS)}")
    return levels


def arith_suite(arg: str | None = None, *, limit: int | None = None, seed: int = 0, per_level: int = 100,
                data: str | Path | None = None) -> list[Problem]:
    """``per_level`` test-split problems of each selected level (``limit`` caps the total), or, with
    ``data``, the problems of a JSONL file in the math suites' schema (``problem``, ``answer``,
    optional ``unique_id``/``id`` and ``level``) at the selected levels: a row whose problem is not
    an arith expression, or whose answer is not the expression's value, is noted and skipped."""
    if limit is not None and limit < 1:
        raise ReasonError("limit", f"must be at least 1 (got {limit})", "drop --limit or give a positive number")
    if data is not None:
        found = read_jsonl(Path(data), file_problem)
        levels = parse_levels(arg) if arg else None
        keep = [p for p in found if levels is None or p.meta["level"] in levels]
        return SuiteProblems(keep[:limit] if limit else keep, found.skipped)
    out: list[Problem] = []
    for level in parse_levels(arg):
        for p in generate(level, per_level, seed=seed, split="test"):
            out.append(Problem(id=p.id, question=p.question, answer=str(p.answer), prompt=p.prompt,
                               step_delimiter=STEP_DELIMITER, meta={"level": level, "suite": "arith"}))
    return out[:limit] if limit is not None else out


def arith_problem(question: str) -> Problem:
    """A :class:`Problem` from a typed-in expression (a one-line error when it does not parse)."""
    p = make_problem(question)
    return Problem(id=p.id, question=p.question, answer=str(p.answer), prompt=p.prompt,
                   step_delimiter=STEP_DELIMITER, meta={"level": p.level, "suite": "arith"})


def file_problem(row: Any, position: int) -> Problem:
    """A :class:`Problem` from one JSONL row (see :func:`arith_suite`); a ValueError says what is wrong."""
    question, answer = problem_and_answer(row)
    p = make_problem(question.strip())
    if answer != str(p.answer):
        raise ValueError(f"answer {answer!r} is not the value of {p.question!r} ({p.answer})")
    ident = row.get("unique_id", row.get("id"))
    level = row.get("level")
    if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
        raise ValueError(f"level {level!r} is not an integer")
    return Problem(id=str(ident) if ident is not None else f"arith-{position}", question=p.question,
                   answer=str(p.answer), prompt=p.prompt, step_delimiter=STEP_DELIMITER,
                   meta={"level": level, "suite": "arith"})


def arith_answer(text: str) -> str | None:
    """The final answer of a solution, as text (None when there is no answer line)."""
    got = final_answer(text)
    return None if got is None else str(got)


# arith solutions run ~40 tokens and end at EOS right after the answer line.
DOMAIN = Domain("arith", STEP_DELIMITER, arith_problem, arith_answer, segment_tokens=8, verifier="arith")
tasks.add("arith", Task("arith", DOMAIN, arith_suite, BUNDLED))


@prms.register("arith")
def arith_prm(path: str | None = None, **options: Any) -> ProcessRewardModel:
    """The exact arith step checker (no checkpoint)."""
    if path:
        raise ReasonError("prm", "'arith' takes no checkpoint", "use --prm arith")
    return ArithPRM(**options)


verifiers.add("arith", ArithVerifier)


@value_models.register("arith")
def arith_value(path: str | None = None, **options: Any) -> ValueModel:
    """The bundled arith value model (learned from the bundled policy's rollouts)."""
    options.setdefault("prompt_format", VALUE_PROMPT)
    options.setdefault("dtype", "float32")
    return LMValueModel.from_pretrained(path or str(BUNDLED["value"]), **options)
