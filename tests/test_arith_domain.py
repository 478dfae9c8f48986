"""The arith domain without the model: grammar, generator, split, exact PRM, verifier, suite."""

from __future__ import annotations

import pytest

from reason.core.errors import ReasonError
from rewards.catalog import load_prm
from tasks import load_suite
from tasks.arith.grammar import evaluate, parse, reducible
from tasks.arith.problems import LEVELS, generate, make_problem, split_of
from tasks.arith.scorers import ArithPRM, ArithVerifier, final_answer


def test_generator_levels_are_seeded_and_split_by_hash():
    for level, spec in LEVELS.items():
        a = generate(level, 30, seed=3)
        assert a == generate(level, 30, seed=3)
        assert a != generate(level, 30, seed=4)
        for p in a:
            assert p.split == "test" and split_of(p.question) == "test"
            assert len(p.steps) == spec.ops
            assert evaluate(parse(p.question)) == p.answer
            assert p.solution.endswith(f"answer: {p.answer}")
    train = {p.question for p in generate(3, 300, seed=0, split="train")}
    test = {p.question for p in generate(3, 300, seed=0, split="test")}
    assert not train & test


def test_solutions_follow_precedence_and_parentheses():
    p = make_problem("(2+3)*4-6*2")
    assert p.steps == ("2+3=5", "5*4=20", "6*2=12", "20-12=8") and p.answer == 8
    assert make_problem("7-2-1").answer == 4  # left associative


@pytest.mark.parametrize("bad", ["2+x", "4/0", "(2+3", "2+3)", "", "3**4"])
def test_malformed_problems_are_one_line_errors(bad):
    with pytest.raises(ReasonError) as info:
        make_problem(bad)
    assert str(info.value).startswith("problem:") and "\n" not in str(info.value)
    with pytest.raises(ReasonError, match="^question:"):
        ArithVerifier().verify(bad, "answer: 3")


def test_arith_prm_checks_each_reduction():
    prm = load_prm("arith")
    q = "3+4*5-6"
    assert prm.score(q, ["4*5=20", "3+20=23", "23-6=17", "answer: 17"]) == [1.0, 1.0, 1.0, 1.0]
    # Wrong order (3+4 before 4*5 ignores precedence): 3+4 is not an operation of the expression.
    assert prm.score(q, ["3+4=7", "7*5=35", "35-6=29", "answer: 29"]) == [0.0, 0.0, 0.0, 0.0]
    # Right operation, wrong result; everything after is off track.
    assert prm.score(q, ["4*5=21", "3+21=24"]) == [0.0, 0.0]
    # A valid but non-canonical order is still a correct reduction.
    assert prm.score("2*3+4*5", ["4*5=20", "2*3=6", "6+20=26", "answer: 26"]) == [1.0] * 4
    # Answer before the expression is reduced.
    assert prm.score(q, ["4*5=20", "answer: 20"]) == [1.0, 0.0]
    assert ArithPRM(high=0.9, low=0.1).score(q, ["4*5=20", "x"]) == [0.9, 0.1]
    with pytest.raises(ReasonError, match="^steps:"):
        prm.score(q, [])
    assert len(reducible(parse("(1+2)*(3+4)"))) == 2


def test_verifier_and_answer_extraction():
    v = ArithVerifier()
    assert v.verify("3+4*5", "4*5=20\n3+20=23\nanswer: 23") == 1.0
    assert v.verify("3+4*5", "answer: 35") == 0.0
    assert v.verify("3+4*5", "4*5=20\n3+20=23\nanswer: 23", reference="23") == 1.0
    assert v.verify("3+4*5", "no answer line") == 0.0
    assert final_answer("x\nanswer: 12\nanswer: 13") == 13


def test_suite():
    problems = load_suite("arith:3", per_level=20)
    assert len(problems) == 20 and all(p.meta["level"] == 3 for p in problems)
    assert all(p.step_delimiter == "\n" and p.prompt == p.question + "\n" for p in problems)
    assert len(load_suite("arith:1,2", per_level=5)) == 10
    with pytest.raises(ReasonError, match="^suite:"):
        load_suite("arith:9")
    with pytest.raises(ReasonError, match="^suite: unknown suite"):
        load_suite("nope")
