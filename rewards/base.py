"""The scorer interfaces strategies ask: "score these", without caring which model answers.

* :class:`ProcessRewardModel`: question + steps -> one score in [0, 1] per step.
* :class:`OutcomeVerifier`: question + final text (+ reference) -> a score (1.0 correct, 0.0 wrong).
* :class:`ValueModel`: question + partial solution -> expected final reward.

Every call is batched and reports the tokens it fed, so node-level scoring can charge the ledger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from reason.core.errors import ReasonError


@dataclass
class StepScores:
    """Scores of a batch of step lists (``scores[i][k]`` for item ``i``, step ``k``) and the tokens
    the model was fed to produce them."""

    scores: list[list[float]]
    tokens: int = 0


@dataclass
class Values:
    """Values of a batch of prefixes and the tokens fed."""

    values: list[float]
    tokens: int = 0


@dataclass
class VerifyItem:
    """One outcome to grade: the final ``response`` text against ``reference`` (may be empty for
    reference-free verifiers)."""

    question: str
    response: str
    reference: str = ""


def check_steps(question: str, steps: Sequence[str]) -> None:
    """Raise a one-line error for inputs no PRM can score."""
    if not isinstance(question, str):
        raise ReasonError("question", f"must be text (got {type(question).__name__})", "pass the problem text")
    if isinstance(steps, str):
        raise ReasonError("steps", "is a string, not a list of steps", "split the solution into steps first")
    if len(steps) == 0:
        raise ReasonError("steps", "is empty", "give at least one step to score")


class ProcessRewardModel(ABC):
    """Scores each step of a partial solution.

    ``incremental`` is True when step ``k``'s score depends only on the question and steps
    ``1..k`` (every causal PRM with per-step tags): then a child node reuses its ancestors' cached
    step scores and only its own steps are new.
    """

    name: str = "prm"
    incremental: bool = True

    @abstractmethod
    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        """Scores for each ``(question, steps)`` item, one per step, in [0, 1]."""

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """Scores of one item's steps."""
        return self.score_batch([(question, steps)]).scores[0]


class OutcomeVerifier(ABC):
    """Grades final answers."""

    name: str = "verifier"

    @abstractmethod
    def verify_batch(self, items: Sequence[VerifyItem]) -> list[float]:
        """One score per item (1.0 correct, 0.0 wrong for exact graders)."""

    def verify(self, question: str, response: str, reference: str = "") -> float:
        """Score of one item."""
        return self.verify_batch([VerifyItem(question, response, reference)])[0]


class ValueModel(ABC):
    """Estimates, from a partial solution, the expected final reward."""

    name: str = "value"

    @abstractmethod
    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        """One value per ``(question, partial_solution)`` item."""

    def value(self, question: str, partial: str) -> float:
        """Value of one item."""
        return self.value_batch([(question, partial)]).values[0]
