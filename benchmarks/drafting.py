"""Speculative tree drafting on arith search workloads: drafting off versus each drafter, in one run.

Per drafter and workload (best-of-16 with majority vote, particle filtering with the arith PRM, at
budget 16 on held-out level-3 problems): mean tokens per verification step per sequence (generated
tokens over verifications), forward passes, wall time and its ratio to drafting off, the drafter's
memory, and whether every tree is token-identical to the run without drafting. ``--concurrency``
sets how many problems are searched at once (1: latency, all: throughput).

Run: ``python benchmarks/drafting.py [--n 100 --concurrency 1 --drafters spine,suffix,recycle]``.
"""

from __future__ import annotations

import argparse
import time

from reason.engine.hf import HFEngine
from reason.models import resolve_model
from rewards.catalog import load_prm
from search.solve import solve_many
from tasks.arith.problems import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--drafters", default="spine,suffix,recycle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    questions = [p.question for p in generate(3, args.n, seed=11)]
    workloads = [("best-of-16", "best_of_n", {"select": "majority"}), ("particle", "particle", {"prm": load_prm("arith")})]
    reference: dict[str, list] = {}
    base_wall: dict[str, float] = {}
    print(f"arith level 3, {args.n} problems, budget 16, {args.concurrency} at a time")
    print("| drafter | workload | tokens / verification | forward passes | wall s | wall ratio vs off | drafter MB | identical |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ["off"] + args.drafters.split(","):
        engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu",
                                          draft=None if name == "off" else name)
        for label, strategy, options in workloads:
            start = time.perf_counter()
            results = []
            for i in range(0, len(questions), args.concurrency):
                results += solve_many(engine, questions[i : i + args.concurrency], strategy=strategy, budget=16,
                                      seed=args.seed, **options)
            wall = time.perf_counter() - start
            trees = [[(n.id, tuple(n.token_ids)) for n in r.tree] for r in results]
            same = reference.setdefault(label, trees) == trees
            base_wall.setdefault(label, wall)
            led = engine.ledger
            steps = led.generated_tokens - led.draft_accepted
            memory = engine.drafter.memory_bytes() / 1e6 if engine.drafter else 0.0
            print(f"| {name} | {label} | {led.generated_tokens / steps:.2f} | {led.forward_passes} | {wall:.1f} | "
                  f"{base_wall[label] / wall:.2f}x | {memory:.1f} | {same} |", flush=True)
            engine.ledger = type(led)()


if __name__ == "__main__":
    main()
