"""Every registered strategy side by side on the same held-out arith problems, in one run.

Prints, per strategy: accuracy with a 95% Wilson interval, mean generated tokens, PRM calls and
value calls per problem, and wall time. Run: ``python benchmarks/strategies.py [--n 200 --budget 16
--level 3]``. Problems come from the arith test split (never trained on).

``--scorer-batching`` instead runs the scorer-heavy strategies on ``--n`` problems twice, all at once
and one problem at a time, and prints how many PRM and value-model calls (and value-model forwards)
each took: searched together, every problem's scorer requests share calls. It checks that both
runs give the same answers and scores.
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
from tasks.arith.scorers import ArithPRM


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
    parser.add_argument("--scorer-batching", action="store_true", help="compare scorer calls: all problems at once vs one at a time")
    args = parser.parse_args()
    if args.scorer_batching:
        scorer_batching(args)
        return
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


class CountingArithPRM(ArithPRM):
    """The exact arith PRM, counting its ``score_batch`` calls (what a model PRM runs as forwards)."""

    calls = 0

    def score_batch(self, items):
        self.calls += 1
        return super().score_batch(items)


def scorer_batching(args: argparse.Namespace) -> None:
    """Scorer calls with every problem searched at once against one problem at a time."""
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    questions = [p.question for p in generate(args.level, args.n, seed=args.seed)]
    budget = int(args.budget.split(",")[0])
    print(f"\narith level {args.level}, {args.n} problems, budget {budget}: scorer calls together vs alone")
    print("| strategy | PRM calls alone | PRM calls together | fewer | value forwards alone | value forwards together "
          "| fewer | same answers and scores |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    runs = [("best_of_n (prm)", dict(strategy="best_of_n")), ("beam", dict(strategy="beam")),
            ("dvts", dict(strategy="dvts")), ("mcts (prm)", dict(strategy="mcts", evaluate="prm")),
            ("mcts (value)", dict(strategy="mcts", evaluate="value")), ("astar", dict(strategy="astar")),
            ("particle", dict(strategy="particle")), ("epf", dict(strategy="epf"))]
    if args.only:
        runs = [r for r in runs if r[0] in args.only.split(",")]
    for name, options in runs:
        calls, forwards, outputs = {}, {}, {}
        for mode in ("alone", "together"):
            prm, value = CountingArithPRM(), load_value("arith")
            kwargs = dict(budget=budget, prm=prm, value=value if options.get("evaluate") == "value" else None, **options)
            if mode == "together":
                results = solve_many(engine, questions, seed=args.seed, **kwargs)
            else:
                results = [solve_many(engine, [q], seed=args.seed + i, **kwargs)[0] for i, q in enumerate(questions)]
            calls[mode], forwards[mode] = prm.calls, value.forwards
            outputs[mode] = [(r.answer, [c.score for c in r.candidates]) for r in results]
        ratio = lambda d: f"{d['alone'] / d['together']:.1f}x" if d["together"] else "-"
        print(f"| {name} | {calls['alone']} | {calls['together']} | {ratio(calls)} | {forwards['alone']} | "
              f"{forwards['together']} | {ratio(forwards)} | {outputs['alone'] == outputs['together']} |", flush=True)


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
