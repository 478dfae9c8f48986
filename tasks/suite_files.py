"""Suites read from JSONL files: the list type that carries the notes on malformed rows, and the
reader that every suite with a ``data=PATH`` option uses (the schema of a row is the suite's)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
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


def text_lines(path: str | Path, field: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of the UTF-8 text file ``path``. A path that is a
    directory or cannot be read, or a line with bytes that are not UTF-8, is a one-line
    :class:`ReasonError` naming ``field`` and the file (and line)."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except IsADirectoryError:
        raise ReasonError(field, f"{path} is a directory", "give a file") from None
    except PermissionError:
        raise ReasonError(field, f"{path} cannot be read (permission denied)", "check the file's permissions") from None
    with fh:
        for number, raw in enumerate(fh, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ReasonError(field, f"{path}:{number} holds bytes that are not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                                  f"column {exc.start + 1})", "save the file as UTF-8") from None


def json_row(line: str) -> Any:
    """``line`` parsed as JSON; a ValueError (JSONDecodeError for bad syntax) also for JSON nested too
    deeply to parse or holding an integer past Python's digit limit."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer over Python's 4,300-digit limit
        raise ValueError(f"unreadable JSON ({str(exc).split(';')[0]})") from None


def read_jsonl(path: Path, make: Callable[[Any, int], Problem]) -> SuiteProblems:
    """Every well-formed row of ``path`` as ``make(row, position)`` makes it; a row that is not JSON,
    or that ``make`` refuses with a ValueError or :class:`ReasonError`, is noted (``path:line: why``)
    and skipped. A file with no well-formed row (empty, or every row malformed) is a one-line error."""
    if not path.exists():
        raise ReasonError("data", f"{path} does not exist", "give a JSONL file in the MATH-500 schema")
    out = SuiteProblems()
    for number, line in text_lines(path, "data"):
        if not line.strip():
            continue
        try:
            out.append(make(json_row(line), len(out) + len(out.skipped)))
        except (ValueError, ReasonError) as exc:  # JSONDecodeError is a ValueError
            why = "invalid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
            out.skipped.append(f"{path}:{number}: {why}")
    if not out:  # an empty or all-malformed file is a mistake, not a suite of nothing
        what = f"all {len(out.skipped)} of its rows are malformed (first: {out.skipped[0]})" if out.skipped else "it is empty"
        raise ReasonError("data", f"{path} has no usable problems: {what}",
                          'give a JSONL file with one {"problem": ..., "answer": ...} object per line')
    return out
