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
    Rows with bad JSON, no ``id``/``prediction``, an unknown or repeated id are skipped and noted."""
    path = Path(predictions)
    if not path.exists():
        raise ReasonError("predictions", f"{path} does not exist", "give a JSONL file of {\"id\", \"prediction\"} rows")
    name = suite.partition(":")[0]
    domain = get_domain(name)
    problems = load_suite(suite, **({"data": data} if data else {}))
    by_id = {p.id: p for p in problems}
    report = GradeReport()
    items, seen = [], set()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                report.skipped.append(f"{path}:{number}: invalid JSON")
                continue
            if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
                report.skipped.append(f"{path}:{number}: needs 'id' and 'prediction'")
                continue
            pid = str(row["id"])
            if pid not in by_id:
                report.skipped.append(f"{path}:{number}: unknown id {pid!r} for suite {suite}")
                continue
            if pid in seen:
                report.skipped.append(f"{path}:{number}: id {pid!r} repeated")
                continue
            seen.add(pid)
            items.append((pid, str(row["prediction"])))
    verifier = verifiers.get(domain.verifier)()
    try:
        scores = verifier.verify_batch([VerifyItem(by_id[i].question, pred, by_id[i].answer) for i, pred in items])
    finally:
        getattr(verifier, "close", lambda: None)()
    report.rows = [{"id": i, "prediction": pred, "gold": by_id[i].answer, "correct": s >= 0.5}
                   for (i, pred), s in zip(items, scores)]
    report.missing = len(by_id) - len(seen)
    return report
