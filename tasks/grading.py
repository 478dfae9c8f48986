"""Grading predictions against a suite with the suite's outcome verifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.base import VerifyItem
from tasks.registry import get_domain, load_suite
from tasks.suite_files import json_row, text_lines


class GradeReport(BaseModel):
    """Per-problem correctness of a predictions file, and what could not be graded."""

    rows: list[dict[str, Any]] = Field(default_factory=list)  # {"id", "prediction", "gold", "correct"}
    skipped: list[str] = Field(default_factory=list)  # "path:line: why"
    missing: int = 0  # suite problems with no prediction

    @property
    def graded(self) -> int:
        return len(self.rows)

    @property
    def correct(self) -> int:
        return sum(r["correct"] for r in self.rows)

    @property
    def accuracy(self) -> float:
        return self.correct / self.graded if self.rows else 0.0


def grade_predictions(suite: str, predictions: str | Path, *, data: str | Path | None = None) -> GradeReport:
    """Grade a JSONL of ``{"id", "prediction"}`` rows against ``suite`` (see :class:`GradeReport`).
    Rows with bad JSON, no ``id``/``prediction``, an unknown or repeated id are skipped and noted,
    as are predictions the verifier cannot read (e.g. an integer past Python's digit limit); a file
    that is not UTF-8 is a one-line error naming the file and line."""
    path = Path(predictions)
    if not path.exists():
        raise ReasonError("predictions", f"{path} does not exist", "give a JSONL file of {\"id\", \"prediction\"} rows")
    name = suite.partition(":")[0]
    domain = get_domain(name)
    problems = load_suite(suite, **({"data": data} if data else {}))
    by_id = {p.id: p for p in problems}
    report = GradeReport()
    items, seen = [], set()
    for number, line in text_lines(path, "predictions"):
        if not line.strip():
            continue
        try:
            row = json_row(line)
        except ValueError as exc:
            report.skipped.append(f"{path}:{number}: " + ("invalid JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)))
            continue
        if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
            report.skipped.append(f"{path}:{number}: needs 'id' and 'prediction'")
            continue
        pid = str(row["id"])
        if pid not in by_id:
            report.skipped.append(f"{path}:{number}: unknown id {pid[:80]!r} for suite {suite}")
            continue
        if pid in seen:
            report.skipped.append(f"{path}:{number}: id {pid!r} repeated")
            continue
        seen.add(pid)
        items.append((pid, str(row["prediction"])))
    verifier = verifiers.get(domain.verifier)()
    try:
        scores = _verify(verifier, [VerifyItem(by_id[i].question, pred, by_id[i].answer) for i, pred in items])
    finally:
        getattr(verifier, "close", lambda: None)()
    report.skipped += [f"{path}: id {pid!r}: cannot be graded ({s})" for (pid, _), s in zip(items, scores) if isinstance(s, str)]
    report.rows = [{"id": i, "prediction": pred, "gold": by_id[i].answer, "correct": s >= 0.5}
                   for (i, pred), s in zip(items, scores) if not isinstance(s, str)]
    report.missing = len(by_id) - len(seen)
    return report


def _verify(verifier: Any, items: list[VerifyItem]) -> list[float | str]:
    """The verifier's scores of ``items``; when it fails on the batch with a ValueError that is not
    about the suite (e.g. a prediction holding an integer past Python's digit limit), each item is
    graded alone and the ones it fails on get the reason (a string) instead of a score."""
    try:
        return list(verifier.verify_batch(items))
    except ReasonError:
        raise
    except (ValueError, RecursionError):
        pass
    out: list[float | str] = []
    for item in items:
        try:
            out.append(verifier.verify_batch([item])[0])
        except ReasonError:
            raise
        except (ValueError, RecursionError) as exc:
            out.append(str(exc).split(";")[0][:120] or type(exc).__name__)
    return out
