"""Sampling whole solutions of arith problems with the engine, and grading them.

Shared by the quality report (``python -m tasks.arith.evaluate``) and the value model's training
data (``python -m tasks.arith.train_value``).
"""

from __future__ import annotations

from dataclasses import dataclass

from reason.core.engine.base import Engine, ExpandRequest, Sampling, Stop
from rewards.base import VerifyItem
from tasks.arith.problems import STEP_DELIMITER, ArithProblem
from tasks.arith.scorers import ArithPRM, ArithVerifier

SOLUTION_STOP = Stop(max_tokens=160)


@dataclass
class SampledSolution:
    """One sampled solution of ``problem``: its text, whether it is correct, and its steps."""

    problem: ArithProblem
    text: str
    correct: bool

    @property
    def steps(self) -> list[str]:
        return [s for s in self.text.split(STEP_DELIMITER) if s.strip()]


def sample_solutions(
    engine: Engine, problems: list[ArithProblem], n: int, temperature: float, seed: int = 0
) -> list[list[SampledSolution]]:
    """``n`` solutions per problem (all problems batched together); greedy when ``temperature`` is 0."""
    trees = [engine.new_tree(p.prompt, meta={"question": p.question}) for p in problems]
    requests = [
        ExpandRequest(t, t.root, n, SOLUTION_STOP, Sampling(temperature=temperature, seed=seed * 100003 + i))
        for i, t in enumerate(trees)
    ]
    results = engine.expand_many(requests)
    verifier = ArithVerifier()
    out = []
    for p, tree, children in zip(problems, trees, results):
        texts = [c.text for c in children]
        grades = verifier.verify_batch([_item(p, t) for t in texts])
        out.append([SampledSolution(p, t, g == 1.0) for t, g in zip(texts, grades)])
        engine.release(tree)
    return out


def _item(problem: ArithProblem, text: str):
    return VerifyItem(problem.question, text, str(problem.answer))


def prm_pick(rollouts: list[SampledSolution], prm: ArithPRM | None = None) -> SampledSolution:
    """The rollout whose last step the PRM scores highest (the first on ties)."""
    prm = prm or ArithPRM()
    best, best_score = rollouts[0], -1.0
    for r in rollouts:
        steps = r.steps
        score = prm.score(r.problem.question, steps)[-1] if steps else 0.0
        if score > best_score:
            best, best_score = r, score
    return best
