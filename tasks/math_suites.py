"""The competition-math suites ``math500``, ``aime24`` and ``aime25``.

Each reads a JSONL file in the MATH-500 schema (``problem``, ``answer``, optional ``solution``,
``unique_id`` or ``id``, ``level``, ``subject``): the project's copy in ``tasks/data/<suite>/``, a
local file (``data=PATH``), or the HF hub (``hub=True``, through ``datasets``; needs internet).
Rows are normalised: ids become strings (``<suite>-<row>`` when missing), AIME answers become plain
integers ("025" -> "25"), ``"Level 3"`` becomes 3. A malformed row is reported with its line number
and skipped; the notes are on the returned list's ``skipped``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError
from rewards.graders import extract_boxed
from search.domain import Domain, Problem
from tasks.registry import Task, tasks
from tasks.suite_files import SuiteProblems, problem_and_answer, read_jsonl

DATA = Path(__file__).parent / "data"
HUB = {"math500": ("HuggingFaceH4/MATH-500", "test"), "aime24": ("HuggingFaceH4/aime_2024", "train"),
       "aime25": ("math-ai/aime25", "test")}


def normalise(row: dict[str, Any], suite: str, position: int) -> Problem:
    """A :class:`Problem` from one row; a ValueError names what is missing."""
    problem, answer = problem_and_answer(row)
    if suite.startswith("aime") and re.fullmatch(r"[+-]?\d+", answer):
        answer = str(int(answer))
    ident = row.get("unique_id", row.get("id"))
    level = row.get("level")
    if isinstance(level, str):
        m = re.search(r"\d+", level)
        level = int(m.group()) if m else level
    meta = {"suite": suite, "level": level, "subject": row.get("subject", row.get("type")), "solution": row.get("solution")}
    return Problem(id=str(ident) if ident is not None else f"{suite}-{position}", question=problem, answer=answer,
                   prompt=problem, step_delimiter="\n\n", meta=meta)


def read_hub(suite: str) -> SuiteProblems:
    """The suite from the HF hub (needs internet and the ``datasets`` package)."""
    name, split = HUB[suite]
    try:
        import datasets
    except ImportError:
        raise ReasonError("hub", "the datasets package is not installed", "pip install datasets, or use --data PATH") from None
    try:
        rows = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, renamed, gated: all end the same way for the user
        raise ReasonError("hub", f"could not load {name}: {type(exc).__name__}", "check the connection or use --data PATH") from None
    out = SuiteProblems()
    for position, row in enumerate(rows):
        try:
            out.append(normalise(dict(row), suite, position))
        except ValueError as exc:
            out.skipped.append(f"{name}[{position}]: {exc}")
    return out


def load(suite: str, arg: str | None = None, *, limit: int | None = None, levels: list[int] | None = None,
         subjects: list[str] | None = None, data: str | Path | None = None, hub: bool = False) -> SuiteProblems:
    """The problems of ``suite``, filtered by ``levels`` and ``subjects``, the first ``limit`` kept."""
    if arg:
        raise ReasonError("suite", f"{suite} takes no argument (got {suite}:{arg})", f"write --suite {suite}")
    if limit is not None and limit < 1:
        raise ReasonError("limit", f"must be at least 1 (got {limit})", "drop --limit or give a positive number")
    if data is not None and hub:
        raise ReasonError("data", "both a local file and the hub were asked for", "give --data or --hub, not both")
    path = Path(data) if data else DATA / suite / "test.jsonl"
    found = read_hub(suite) if hub else read_jsonl(path, lambda row, position: normalise(row, suite, position))
    keep = [p for p in found if (levels is None or p.meta.get("level") in levels)
            and (subjects is None or p.meta.get("subject") in subjects)]
    if subjects is not None and not keep:
        known = sorted({str(p.meta.get("subject")) for p in found})
        raise ReasonError("subjects", f"no problem has subject {subjects}", f"use some of: {', '.join(known)}")
    return SuiteProblems(keep[:limit] if limit else keep, found.skipped)


def math_domain(name: str, verifier: str) -> Domain:
    """Competition math: steps split by blank lines, the answer in the last ``\\boxed{}``."""

    def problem(question: str) -> Problem:
        if not question.strip():
            raise ReasonError("problem", "is empty", "give the problem text")
        digest = hashlib.sha256(question.encode()).hexdigest()[:12]
        return Problem(id=f"{name}-{digest}", question=question, answer="", prompt=question, meta={"suite": name})

    return Domain(name, "\n\n", problem, extract_boxed, segment_tokens=512,
                  answer_complete=lambda text: extract_boxed(text) is not None, verifier=verifier)


for _name in HUB:
    tasks.add(_name, Task(_name, math_domain(_name, "aime" if _name.startswith("aime") else "math"),
                          lambda arg=None, _suite=_name, **options: load(_suite, arg, **options)))
