"""Quality report of an arith policy: ``python -m tasks.arith.evaluate [--model PATH]``.

For each level: greedy accuracy; with 16 samples at temperature 0.8, how many problems have at
least one correct sample (pass@16) and how often the arith PRM's last-step score picks a correct one
(best-of-16). Problems come from the test split, which training never sees.
"""

from __future__ import annotations

import argparse
import json
import time

from reason.core.engine.hf import HFEngine
from tasks.arith.problems import generate
from tasks.arith.solutions import prm_pick, sample_solutions
from tasks.registry import resolve_model


def report(engine: HFEngine, level: int, n: int, samples: int, temperature: float, seed: int = 0) -> dict:
    """The numbers for one level (see the module docstring)."""
    problems = generate(level, n, seed=seed, split="test")
    greedy = [r[0].correct for r in sample_solutions(engine, problems, 1, 0.0, seed)]
    sampled = sample_solutions(engine, problems, samples, temperature, seed)
    any_ok = [any(r.correct for r in rs) for rs in sampled]
    picked = [prm_pick(rs).correct for rs in sampled]
    return {
        "level": level,
        "problems": n,
        "greedy_accuracy": sum(greedy) / n,
        f"pass@{samples}": sum(any_ok) / n,
        f"prm_best_of_{samples}": sum(picked) / n,
        "sample_accuracy": sum(r.correct for rs in sampled for r in rs) / (n * samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="arith")
    parser.add_argument("--levels", default="1,2,3,4,5")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = HFEngine.from_pretrained(resolve_model(args.model), dtype="float32", device="cpu")
    for level in [int(x) for x in args.levels.split(",")]:
        started = time.time()
        row = report(engine, level, args.n, args.samples, args.temperature, args.seed)
        row["seconds"] = round(time.time() - started, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
