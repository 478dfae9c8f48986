"""Outcome verifiers: math-verify in worker processes, AIME integers, exact match."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.base import VerifyItem
from rewards.graders import MathVerifier, extract_boxed

sys.path.insert(0, str(Path(__file__).parent))
from hang_helpers import hang_on_marker

DATA = Path(__file__).resolve().parents[1] / "tasks" / "data"


def rows(name):
    return [json.loads(line) for line in (DATA / name / "test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def math_verifier():
    with MathVerifier(timeout=10) as v:
        yield v


def test_all_math500_reference_solutions_grade_correct(math_verifier):
    data = rows("math500")
    scores = math_verifier.verify_batch([VerifyItem(r["problem"], r["solution"], r["answer"]) for r in data])
    assert len(scores) == 500 and sum(scores) == 500


def test_changed_values_grade_wrong(math_verifier):
    ints = [r for r in rows("math500") if r["answer"].strip().lstrip("-").isdigit()][:60]
    assert len(ints) == 60
    items = [VerifyItem(r["problem"], f"so \\boxed{{{int(r['answer']) + 1}}}", r["answer"]) for r in ints]
    assert sum(math_verifier.verify_batch(items)) == 0
    right = [VerifyItem(r["problem"], f"so \\boxed{{{r['answer']}}}", r["answer"]) for r in ints]
    assert sum(math_verifier.verify_batch(right)) == 60


def test_aime_zero_padding():
    aime = verifiers.get("aime")()
    assert aime.verify("q", "thus \\boxed{25}", "025") == 1.0
    assert aime.verify("q", "thus \\boxed{24}", "025") == 0.0
    assert aime.verify("q", "the answer is 25", "025") == 1.0
    data = rows("aime24")
    assert all(aime.verify(r["problem"], f"\\boxed{{{int(r['answer'])}}}", r["answer"]) == 1.0 for r in data)
    with MathVerifier() as mv:
        assert mv.verify("q", "\\boxed{25}", "025") == 1.0
    with pytest.raises(ReasonError, match="^reference:"):
        aime.verify("q", "\\boxed{1}", "x")
    # Numbers past Python's int-conversion digit limit are compared, not converted.
    assert aime.verify("q", "\\boxed{" + "9" * 5000 + "}", "25") == 0.0
    assert aime.verify("q", "\\boxed{" + "0" * 5000 + "25}", "025") == 1.0


def test_exact_and_boxed_extraction():
    exact = verifiers.get("exact")()
    assert exact.verify("q", "we get \\boxed{ 3, 4 }", "3, 4") == 1.0
    assert exact.verify("q", "we get \\boxed{3,4}", "3, 4") == 0.0
    assert extract_boxed("a \\boxed{\\frac{1}{2}} then \\boxed{x^{2}}") == "x^{2}"
    assert extract_boxed("none") is None


def test_a_hung_item_times_out_and_the_rest_are_graded():
    with MathVerifier(timeout=2, workers=2, chunk=4, grade=hang_on_marker) as v:
        items = [VerifyItem("q", f"\\boxed{{{i}}}", str(i)) for i in range(10)]
        items[3] = VerifyItem("q", "HANG \\boxed{3}", "3")
        scores = v.verify_batch(items)
        assert scores[3] == 0.0 and v.timeouts == 1
        assert scores[:3] + scores[4:] == [1.0] * 9
        assert v.verify_batch(items[:3]) == [1.0] * 3  # the pool still works


def test_works_from_a_thread(math_verifier):
    items = [VerifyItem("q", "\\boxed{\\frac{1}{2}}", "0.5"), VerifyItem("q", "\\boxed{3}", "4")]
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("out", math_verifier.verify_batch(items)))
    t.start()
    t.join(60)
    assert box["out"] == [1.0, 0.0]


def test_unknown_verifier():
    with pytest.raises(ReasonError, match="^verifier: unknown verifier 'nope'"):
        verifiers.get("nope")
