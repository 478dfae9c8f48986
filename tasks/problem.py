"""The problem record every suite yields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """One problem: a stable id, the question text, the reference answer, the prompt the policy
    sees, the step delimiter of its suite, and free-form metadata (level, subject, ...)."""

    id: str
    question: str
    answer: str
    prompt: str
    step_delimiter: str = "\n\n"
    meta: dict[str, Any] = Field(default_factory=dict)
