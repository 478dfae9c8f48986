"""What a search is over: the :class:`Problem` record every suite yields and the :class:`Domain`
conventions a strategy needs (step delimiter, answer extraction). Tasks register concrete domains;
strategies only see this contract."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Domain:
    """A suite's conventions: how a problem statement becomes a :class:`Problem` (validating it),
    the step delimiter, how the final answer is read out of a solution, and optionally which step
    texts are one state (``state_key``)."""

    name: str
    delimiter: str
    make_problem: Callable[[str], Problem]
    extract_answer: Callable[[str], str | None]
    segment_tokens: int = 512  # TreePO's segment length for this suite's solutions
    answer_complete: Callable[[str], bool] | None = None  # a full final answer is in the text
    verifier: str = "exact"  # the outcome verifier (rewards.verifiers name) that grades answers
    # Steps whose texts have the same key are one state (merged like identical token ids); None
    # merges identical token ids only.
    state_key: Callable[[str], Hashable] | None = None
