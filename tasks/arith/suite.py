"""The ``arith`` suite: generated test-split problems, levels selectable (``arith:3``, ``arith:1,2``)."""

from __future__ import annotations

from reason.errors import ReasonError
from tasks import suites
from tasks.arith.problems import LEVELS, STEP_DELIMITER, generate
from tasks.problem import Problem


def parse_levels(arg: str | None) -> list[int]:
    """Levels from ``"3"`` or ``"1,2,3"``; all levels when empty."""
    if not arg:
        return sorted(LEVELS)
    try:
        levels = [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
        raise ReasonError("suite", f"bad arith levels {arg!r}", "use e.g. arith:3 or arith:1,2") from None
    bad = [x for x in levels if x not in LEVELS]
    if bad or not levels:
        raise ReasonError("suite", f"unknown arith level {bad[0] if bad else arg!r}", f"use levels {sorted(LEVELS)}")
    return levels


@suites.register("arith")
def arith_suite(arg: str | None = None, *, limit: int | None = None, seed: int = 0, per_level: int = 100) -> list[Problem]:
    """``per_level`` test-split problems of each selected level (``limit`` caps the total)."""
    out: list[Problem] = []
    for level in parse_levels(arg):
        for p in generate(level, per_level, seed=seed, split="test"):
            out.append(
                Problem(
                    id=p.id,
                    question=p.question,
                    answer=str(p.answer),
                    prompt=p.prompt,
                    step_delimiter=STEP_DELIMITER,
                    meta={"level": level, "suite": "arith"},
                )
            )
    return out[:limit] if limit is not None else out
