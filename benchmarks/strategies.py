"""Every registered strategy side by side on the same held-out arith problems, in one run.

Prints, per strategy: accuracy with a 95% Wilson interval, mean generated tokens, PRM calls and
value calls per problem, and wall time. Run: ``python benchmarks/strategies.py [--n 200 --budget 16
--level 3]``. Problems come from the arith test split (never trained on).

Every row also says how much of the generated compute repeated a state the tree already held: with
merging (the default) the tokens of samples folded into an identical sibling (``merged %``); with
``--no-merge``, the tokens sitting under a sibling with exactly the same tokens (what merging folds).

``--equal-tokens 600,2400`` compares strategies at equal generated tokens instead of equal ``n``:
for each target T, each strategy's ``n`` is calibrated (tokens per unit of ``n`` on the first 20
problems at ``n = 8``, then ``n = T / that``) and the run is capped at T tokens per problem
(``budget_tokens``); the table ranks strategies by accuracy with 95% bootstrap intervals.

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
from reason.core.tree import Tree
from tasks.metrics import bootstrap_ci
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
    parser.add_argument("--no-merge", action="store_true", help="keep identical siblings apart (to measure duplicates)")
    parser.add_argument("--equal-tokens", default=None, help="compare at these generated tokens per problem, e.g. 600,2400")
    parser.add_argument("--aggregation", default="last", help="PRM aggregation: last, min, prod, mean or model")
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
    common = {"merge": not args.no_merge, "aggregation": args.aggregation}
    if args.equal_tokens:
        equal_tokens(args, engine, questions, problems, [(n, {**o, **common}) for n, o in runs])
        return
    for budget in (int(b) for b in args.budget.split(",")):
        print(f"\narith level {args.level}, {args.n} test-split problems, budget {budget}, seed {args.seed}"
              f"{', no merging' if args.no_merge else ''}, aggregation {args.aggregation}")
        print("| strategy | accuracy | 95% CI | gen tokens / problem | PRM calls / problem | value calls / problem "
              f"| {'duplicate' if args.no_merge else 'merged'} % | wall s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, options in runs:
            if name.startswith("particle gibbs") and budget < 4:
                continue
            row(name, engine, questions, problems, budget, args.seed, {**options, **common})


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


def duplicate_tokens(tree: Tree) -> int:
    """Generated tokens spent on a state the tree already had: those of nodes that are, or sit
    under, a node with an older sibling holding the same tokens, plus the tokens merged away
    (``merged_tokens``)."""
    dup = 0
    stack = [(tree.root, False)]
    while stack:
        node, under = stack.pop()
        seen: set[tuple[int, ...]] = set()
        for child in node.children:
            key = tuple(child.token_ids)
            repeated = under or key in seen
            seen.add(key)
            dup += len(child.token_ids) if repeated else 0
            stack.append((child, repeated))
    return dup + tree.ledger.merged_tokens


def row(name: str, engine, questions, problems, budget: int, seed: int, options: dict) -> list:
    """Run one strategy over every problem, print its table row and return the results."""
    started = time.perf_counter()
    results = solve_many(engine, questions, budget=budget, seed=seed, **options)
    wall = time.perf_counter() - started
    k = sum(r.answer == str(p.answer) for r, p in zip(results, problems))
    lo, hi = wilson(k, len(problems))
    per = lambda f: sum(f(r.ledger) for r in results) / len(results)
    generated = sum(r.ledger.generated_tokens for r in results)
    dup = 100 * sum(duplicate_tokens(r.tree) for r in results) / max(1, generated)
    print(f"| {name} | {k / len(problems):.3f} | {lo:.3f}-{hi:.3f} | {per(lambda l: l.generated_tokens):.0f} | "
          f"{per(lambda l: l.prm_calls):.1f} | {per(lambda l: l.value_calls):.1f} | {dup:.0f} | {wall:.1f} |", flush=True)
    return results


def equal_tokens(args: argparse.Namespace, engine, questions, problems, runs: list) -> None:
    """Each strategy at each target of generated tokens per problem (see the module docstring)."""
    calibration = questions[:20]
    per_n: dict[str, float] = {}
    for name, options in runs:
        if name == "greedy":
            continue
        results = solve_many(engine, calibration, budget=8, seed=args.seed, **options)
        per_n[name] = max(1.0, sum(r.ledger.generated_tokens for r in results) / len(results) / 8)
    for target in (int(t) for t in args.equal_tokens.split(",")):
        print(f"\narith level {args.level}, {args.n} test-split problems, at most {target} generated tokens per "
              f"problem, seed {args.seed}, aggregation {args.aggregation}")
        rows = []
        for name, options in runs:
            if name not in per_n:
                continue
            n = max(1, int(target / per_n[name]))
            if name.startswith("particle gibbs") and n < 4:
                continue
            results = solve_many(engine, questions, budget=n, budget_tokens=target, seed=args.seed, **options)
            right = [float(r.answer == str(p.answer)) for r, p in zip(results, problems)]
            tokens = sum(r.ledger.generated_tokens for r in results) / len(results)
            rows.append((sum(right) / len(right), bootstrap_ci(right, seed=args.seed), name, n, tokens))
            print(f"  {name}: n={n} accuracy {rows[-1][0]:.3f} tokens {tokens:.0f}", flush=True)
        print("| rank | strategy | n | accuracy | 95% bootstrap CI | gen tokens / problem |")
        print("| --- | --- | --- | --- | --- | --- |")
        for rank, (acc, (lo, hi), name, n, tokens) in enumerate(sorted(rows, key=lambda r: -r[0]), 1):
            print(f"| {rank} | {name} | {n} | {acc:.3f} | {lo:.3f}-{hi:.3f} | {tokens:.0f} |", flush=True)


if __name__ == "__main__":
    main()
