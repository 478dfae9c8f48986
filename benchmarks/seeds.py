"""How much of a difference between two runs is the search seed: one strategy on the same arith
problems, searched with several seeds, with the accuracy and tokens of each seed and their mean.

Run: ``python benchmarks/seeds.py --strategy beam --budget 64 --seeds 0,1,2,3`` (200 level-3
test-split problems from ``generate(3, 200, seed=0)``, the exact arith PRM). To compare with an
older version of the project, run the same command from a checkout of it with
``PYTHONPATH=<checkout>``: the script uses only ``solve_many`` and the arith task, which every
version since issue 5 has.
"""

from __future__ import annotations

import argparse
import statistics

from reason.core.engine.hf import HFEngine
from reason.shortcuts import solve_many
from rewards.catalog import load_prm
from tasks.arith.problems import generate
from tasks.registry import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated search seeds")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    problems = generate(args.level, args.n, seed=0)
    questions = [p.question for p in problems]
    accuracies = []
    for seed in (int(s) for s in args.seeds.split(",")):
        results = solve_many(engine, questions, strategy=args.strategy, prm=load_prm("arith"), budget=args.budget,
                             seed=seed)
        accuracy = sum(str(r.answer) == str(p.answer) for r, p in zip(results, problems)) / len(problems)
        tokens = sum(r.ledger.generated_tokens for r in results) / len(results)
        accuracies.append(accuracy)
        print(f"{args.strategy} budget {args.budget} seed {seed}: accuracy {accuracy:.3f}, {tokens:.0f} tokens/problem",
              flush=True)
    print(f"mean accuracy {statistics.mean(accuracies):.3f} over {len(accuracies)} seeds")


if __name__ == "__main__":
    main()
