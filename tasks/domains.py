"""What a search needs to know about a problem's domain: how to turn a problem statement into a
:class:`~tasks.problem.Problem` (validating it), the step delimiter, and how to read the final answer
out of a solution. Registered by suite name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reason.registry import Registry
from tasks.problem import Problem


@dataclass(frozen=True)
class Domain:
    """A suite's conventions (see the module docstring)."""

    name: str
    delimiter: str
    make_problem: Callable[[str], Problem]
    extract_answer: Callable[[str], str | None]
    segment_tokens: int = 512  # TreePO's segment length for this suite's solutions
    answer_complete: Callable[[str], bool] | None = None  # a full final answer is in the text
    verifier: str = "exact"  # the outcome verifier (rewards.verifiers name) that grades answers


domains: Registry[Domain] = Registry("suite")


def _arith() -> Domain:
    from tasks.arith.problems import STEP_DELIMITER, make_problem
    from tasks.arith.scorers import final_answer

    def problem(question: str) -> Problem:
        p = make_problem(question)
        return Problem(id=p.id, question=p.question, answer=str(p.answer), prompt=p.prompt,
                       step_delimiter=STEP_DELIMITER, meta={"level": p.level, "suite": "arith"})

    def answer(text: str) -> str | None:
        got = final_answer(text)
        return None if got is None else str(got)

    # arith solutions run ~40 tokens and end at EOS right after the answer line.
    return Domain("arith", STEP_DELIMITER, problem, answer, segment_tokens=8, verifier="arith")


def _math(name: str, verifier: str) -> Domain:
    """Competition math: steps split by blank lines, the answer in the last ``\\boxed{}``."""
    import hashlib

    from rewards.graders import extract_boxed

    def problem(question: str) -> Problem:
        if not question.strip():
            from reason.errors import ReasonError

            raise ReasonError("problem", "is empty", "give the problem text")
        digest = hashlib.sha256(question.encode()).hexdigest()[:12]
        return Problem(id=f"{name}-{digest}", question=question, answer="", prompt=question, meta={"suite": name})

    return Domain(name, "\n\n", problem, extract_boxed, segment_tokens=512,
                  answer_complete=lambda text: extract_boxed(text) is not None, verifier=verifier)


domains.add("arith", _arith())
domains.add("math500", _math("math500", "math"))
domains.add("aime24", _math("aime24", "aime"))
domains.add("aime25", _math("aime25", "aime"))
