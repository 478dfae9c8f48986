"""Seeded arith problems by difficulty level, with canonical step-by-step solutions and a
hash-based train/test split (a problem's split depends only on its text, so no test problem is ever
trained on, whatever seed or level produced it).

Levels (operations, operand sizes, structure):

1. one ``+``/``-``, operands 1..50;
2. two operations of ``+ - *``, operands 1..20 (products of up to 12 x 12);
3. three operations, operands up to 30, products up to 2-digit x 1-digit, parentheses sometimes;
4. four operations, operands up to 50, parentheses often;
5. five operations, operands up to 99, 2-digit x 2-digit products.

Every intermediate value stays in 0..9999 (no negative numbers).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from reason.core.errors import ReasonError
from tasks.arith.grammar import Num, Op, evaluate, parse, render, solve

PROMPT = "{question}\n"
ANSWER_PREFIX = "answer: "
STEP_DELIMITER = "\n"
VALUE_PROMPT = "{question}\n{partial}"  # what the bundled value model reads: the question, then the partial solution


@dataclass(frozen=True)
class LevelSpec:
    ops: int
    max_operand: int
    max_factor: int  # the smaller factor of a product is at most this
    paren_prob: float
    allow_mul: bool = True


LEVELS = {
    1: LevelSpec(1, 50, 0, 0.0, allow_mul=False),
    2: LevelSpec(2, 20, 12, 0.0),
    3: LevelSpec(3, 30, 9, 0.3),
    4: LevelSpec(4, 50, 12, 0.6),
    5: LevelSpec(5, 99, 99, 0.6),
}


@dataclass(frozen=True)
class ArithProblem:
    """One problem: the expression, its answer, level, canonical solution and split."""

    question: str
    answer: int
    level: int
    steps: tuple[str, ...]

    @property
    def id(self) -> str:
        return "arith-" + digest(self.question)[:12]

    @property
    def split(self) -> str:
        return split_of(self.question)

    @property
    def prompt(self) -> str:
        return PROMPT.format(question=self.question)

    @property
    def solution(self) -> str:
        """The target text after the prompt: one step per line, then the answer line."""
        return "".join(s + STEP_DELIMITER for s in self.steps) + f"{ANSWER_PREFIX}{self.answer}"


def digest(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()


def split_of(question: str) -> str:
    """``"test"`` for one problem in five (by hash of its text), else ``"train"``."""
    return "test" if int(digest(question)[:8], 16) % 5 == 0 else "train"


def _random_tree(rng: random.Random, spec: LevelSpec, ops: int) -> Op | Num:
    if ops == 0:
        return Num(rng.randint(1, spec.max_operand))
    op = rng.choice(["+", "-"] + (["*"] * 2 if spec.allow_mul else []))
    if op == "*":
        # One factor is a small number, so products stay within the level's size.
        small: Op | Num = Num(rng.randint(2, max(2, spec.max_factor)))
        big = _random_tree(rng, spec, ops - 1)
        left, right = (small, big) if rng.random() < 0.5 else (big, small)
        return Op(op, left, right)
    left_ops = rng.randint(0, ops - 1)
    return Op(op, _random_tree(rng, spec, left_ops), _random_tree(rng, spec, ops - 1 - left_ops))


def _needs_paren(child: Op | Num, parent: Op, is_right: bool) -> bool:
    if not isinstance(child, Op):
        return False
    from tasks.arith.grammar import PRECEDENCE

    if PRECEDENCE[child.op] < PRECEDENCE[parent.op]:
        return True
    return is_right and PRECEDENCE[child.op] == PRECEDENCE[parent.op] and parent.op in "-/"


def _bracket(node: Op | Num, rng: random.Random, spec: LevelSpec) -> Op | Num:
    if isinstance(node, Num):
        return node
    left, right = _bracket(node.left, rng, spec), _bracket(node.right, rng, spec)
    new = Op(node.op, left, right)
    wrap_l = isinstance(left, Op) and (_needs_paren(left, new, False) or rng.random() < spec.paren_prob * 0.3)
    wrap_r = isinstance(right, Op) and (_needs_paren(right, new, True) or rng.random() < spec.paren_prob)
    if wrap_l:
        left = Op(left.op, left.left, left.right, True)
    if wrap_r:
        right = Op(right.op, right.left, right.right, True)
    return Op(node.op, left, right)


def _in_range(node: Op | Num) -> bool:
    if isinstance(node, Num):
        return 0 <= node.value <= 9999
    if not (_in_range(node.left) and _in_range(node.right)):
        return False
    return 0 <= evaluate(node) <= 9999


def make_problem(question: str, level: int = 0) -> ArithProblem:
    """A problem from its expression text (a malformed one is a one-line error naming ``problem``)."""
    tree = parse(question, "problem")
    steps, answer = solve(tree)
    return ArithProblem(question=render(tree), answer=answer, level=level, steps=tuple(steps))


def generate(level: int, n: int, *, seed: int = 0, split: str | None = "test") -> list[ArithProblem]:
    """``n`` distinct problems of ``level`` from ``split`` (``None`` for either), seeded."""
    if level not in LEVELS:
        raise ReasonError("level", f"unknown arith level {level}", f"use one of {sorted(LEVELS)}")
    if split not in ("train", "test", None):
        raise ReasonError("split", f"unknown split {split!r}", "use train or test")
    spec = LEVELS[level]
    rng = random.Random(f"arith-{level}-{seed}")
    out: dict[str, ArithProblem] = {}
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ReasonError("n", f"level {level} has too few distinct {split} problems for n={n}", "ask for fewer")
        tree = _bracket(_random_tree(rng, spec, spec.ops), rng, spec)
        if not _in_range(tree):
            continue
        text = render(tree)
        if split is not None and split_of(text) != split:
            continue
        if text not in out:
            problem = make_problem(text, level)
            if all(int(step.split("=")[1]) >= 0 for step in problem.steps):
                out[text] = problem
    return list(out.values())
