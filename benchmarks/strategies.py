"""Every registered strategy side by side on the same held-out arith problems, in one run.

Prints, per strategy: accuracy with a 95% Wilson interval, mean generated tokens, PRM calls and
value calls per problem, and wall time. Run: ``python benchmarks/strategies.py [--n 200 --budget 16
--level 3]``. Problems come from the arith test split (never trained on).
"""

from __future__ import annotations

import argparse
import math
import time

from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model
from rewards.catalog import load_prm, load_value
from reason.shortcuts import solve_many
from tasks.arith.problems import generate


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--budget", default="16", help="one budget or a comma-separated list (e.g. 4,16,64)")
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated strategy labels to run")
    args = parser.parse_args()
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    problems = generate(args.level, args.n, seed=args.seed)
    questions = [p.question for p in problems]
    prm, value = load_prm("arith"), load_value("arith")
    runs = [
        ("greedy", dict(strategy="greedy")),
        ("best_of_n (prm)", dict(strategy="best_of_n", prm=prm)),
        ("best_of_n (majority)", dict(strategy="best_of_n", select="majority")),
        ("best_of_n (weighted)", dict(strategy="best_of_n", prm=prm, select="weighted")),
        ("beam", dict(strategy="beam", prm=prm)),
        ("dvts", dict(strategy="dvts", prm=prm)),
        ("mcts (prm)", dict(strategy="mcts", prm=prm, evaluate="prm")),
        ("mcts (value)", dict(strategy="mcts", prm=prm, value=value, evaluate="value")),
        ("mcts (rollout)", dict(strategy="mcts", prm=prm, evaluate="rollout")),
        ("astar", dict(strategy="astar", prm=prm)),
        ("particle", dict(strategy="particle", prm=prm)),
        ("epf", dict(strategy="epf", prm=prm)),
        ("particle gibbs (2 sweeps)", dict(strategy="particle", prm=prm, iterations=2)),
        ("treepo (majority)", dict(strategy="treepo")),
        ("treepo (prm)", dict(strategy="treepo", prm=prm, select="prm")),
        ("first_finish", dict(strategy="first_finish")),
        ("first_finish (k=3)", dict(strategy="first_finish", k=3)),
    ]
    if args.only:
        runs = [r for r in runs if r[0] in args.only.split(",")]
    for budget in (int(b) for b in args.budget.split(",")):
        print(f"\narith level {args.level}, {args.n} test-split problems, budget {budget}, seed {args.seed}")
        print("| strategy | accuracy | 95% CI | gen tokens / problem | PRM calls / problem | value calls / problem | wall s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, options in runs:
            if name.startswith("particle gibbs") and budget < 4:
                continue
            row(name, engine, questions, problems, budget, args.seed, options)


def row(name: str, engine, questions, problems, budget: int, seed: int, options: dict) -> None:
    """Run one strategy over every problem and print its table row."""
    started = time.perf_counter()
    results = solve_many(engine, questions, budget=budget, seed=seed, **options)
    wall = time.perf_counter() - started
    k = sum(r.answer == str(p.answer) for r, p in zip(results, problems))
    lo, hi = wilson(k, len(problems))
    per = lambda f: sum(f(r.ledger) for r in results) / len(results)
    print(f"| {name} | {k / len(problems):.3f} | {lo:.3f}-{hi:.3f} | {per(lambda l: l.generated_tokens):.0f} | "
          f"{per(lambda l: l.prm_calls):.1f} | {per(lambda l: l.value_calls):.1f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
