"""Suites read from JSONL files: the list type that carries the notes on malformed rows, and the
reader that every suite with a ``data=PATH`` option uses (the schema of a row is the suite's)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError
from search.domain import Problem


class SuiteProblems(list):
    """The problems of a suite (a list), with ``skipped``: one note per malformed row."""

    def __init__(self, problems: Iterable[Problem] = (), skipped: list[str] | None = None) -> None:
        super().__init__(problems)
        self.skipped: list[str] = skipped or []


def problem_and_answer(row: Any) -> tuple[str, str]:
    """The ``problem`` (or ``question``) and ``answer`` texts of a row in the MATH-500 schema; a
    ValueError names what is missing."""
    if not isinstance(row, dict):
        raise ValueError("the row is not a JSON object")
    problem = row.get("problem", row.get("question"))
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("no 'problem'")
    answer = row.get("answer")
    if answer is None or not str(answer).strip():
        raise ValueError("no 'answer'")
    return problem, str(answer).strip()


def read_jsonl(path: Path, make: Callable[[Any, int], Problem]) -> SuiteProblems:
    """Every well-formed row of ``path`` as ``make(row, position)`` makes it; a row that is not JSON,
    or that ``make`` refuses with a ValueError or :class:`ReasonError`, is noted (``path:line: why``)
    and skipped."""
    if not path.exists():
        raise ReasonError("data", f"{path} does not exist", "give a JSONL file in the MATH-500 schema")
    out = SuiteProblems()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(make(json.loads(line), len(out) + len(out.skipped)))
            except (ValueError, ReasonError) as exc:  # JSONDecodeError is a ValueError
                why = "invalid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                out.skipped.append(f"{path}:{number}: {why}")
    return out
