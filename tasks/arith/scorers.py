"""Exact scorers for arith: a step-checking PRM and an outcome verifier.

The PRM follows the expression as the steps reduce it. A step ``a<op>b=c`` is correct when
``a<op>b`` is an operation of the current expression whose operands are both numbers (so doing it
now preserves the value: the right operation) and ``c`` is its result (the right result); the answer
line is correct when the expression is fully reduced to that number. After a wrong step the
solution is off track, so every later step scores low too. Scores are probabilities: ``high`` for a
correct step, ``low`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from reason.core.errors import ReasonError
from rewards.base import (
    OutcomeVerifier,
    ProcessRewardModel,
    StepScores,
    VerifyItem,
    check_steps,
)
from tasks.arith.grammar import (
    Num,
    apply,
    canonical,
    evaluate,
    parse,
    reducible,
    replace,
    to_int,
)
from tasks.arith.problems import ANSWER_PREFIX

_STEP = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"^\s*" + re.escape(ANSWER_PREFIX.strip()) + r"\s*(-?\d+)\s*$")


def _question_expr(question: str) -> str:
    # Prompts may carry the template's trailing newline.
    return question.strip().splitlines()[0] if question.strip() else question


def final_answer(text: str) -> int | None:
    """The number on the last ``answer:`` line of ``text``, or None (also when that number is over
    the grammar's digit limit: no expression has such a value)."""
    for line in reversed(text.strip().splitlines()):
        m = _ANSWER.match(line)
        if m:
            try:
                return to_int(m.group(1), "answer")
            except ReasonError:
                return None
    return None


class ArithPRM(ProcessRewardModel):
    """Exact step checker for arith solutions (see the module docstring)."""

    name = "arith"
    incremental = True

    def __init__(self, high: float = 1.0, low: float = 0.0) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ReasonError("high", f"needs 0 <= low < high <= 1 (got low={low}, high={high})", "fix the scores")
        self.high, self.low = high, low

    def check(self, question: str, steps: Sequence[str]) -> list[bool]:
        """Whether each step is correct, in order."""
        check_steps(question, steps)
        expr = parse(_question_expr(question), "question")
        out: list[bool] = []
        on_track = True
        for step in steps:
            # A step may hold several lines (a whole solution scored as one step): it is correct
            # when every line is.
            ok = True
            for line in [part for part in step.splitlines() if part.strip()] or [step]:
                good = on_track and ok
                if good:
                    good, expr = self._line(expr, line)
                ok = ok and good
            on_track = on_track and ok
            out.append(ok)
        return out

    @staticmethod
    def _line(expr, line: str):
        """Whether one line is a correct step (or final answer) of ``expr``, and the expression after it."""
        m = _STEP.match(line)
        a_m = _ANSWER.match(line)
        if m and not isinstance(expr, Num):
            try:  # a number over the digit limit is no number of the expression: a wrong step
                a, op, b, c = to_int(m.group(1), "step"), m.group(2), to_int(m.group(3), "step"), to_int(m.group(4), "step")
            except ReasonError:
                return False, expr
            options = reducible(expr)
            first = canonical(expr)
            ordered = ([first] if first is not None else []) + [o for o in options if o is not first]
            match = next(
                (o for o in ordered if o.op == op and o.left.value == a and o.right.value == b),  # type: ignore[union-attr]
                None,
            )
            if match is None:
                return False, expr
            try:
                ok = apply(op, a, b, "step") == c
            except ReasonError:
                return False, expr
            return ok, (replace(expr, match, c) if ok else expr)
        if a_m:
            return isinstance(expr, Num) and expr.value == final_answer(line), expr
        return False, expr

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        scores = [[self.high if ok else self.low for ok in self.check(q, steps)] for q, steps in items]
        return StepScores(scores, tokens=0)


class ArithVerifier(OutcomeVerifier):
    """1.0 when the response's last ``answer:`` line equals the reference (or, without one, the
    question's value); a malformed question is a one-line error."""

    name = "arith"

    def verify_batch(self, items: Sequence[VerifyItem]) -> list[float]:
        out = []
        for item in items:
            if item.reference.strip():
                gold = to_int(item.reference.strip(), "reference")
            else:
                gold = evaluate(parse(_question_expr(item.question), "question"), "question")
            got = final_answer(item.response)
            out.append(1.0 if got is not None and got == gold else 0.0)
        return out
