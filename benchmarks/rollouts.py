"""Rollout cost of TreePO segment trees against independent sampling, side by side, in one run.

For each setting, every prompt gets a group of ``--group`` completions through ``reason.rollout``
on the same engine: independent samples (``best_of_n``) and TreePO trees at several segment lengths
and first divergences. Prints, per setting, the tokens the engine generated per group (its ledger:
a segment shared by several leaves counts once), the tokens the group's completions hold, the
generated tokens as a ratio of independent sampling's, the wall seconds per group (median over
``--repeats`` interleaved runs) and the mean reward (correct answers) of the leaves.

Run: ``python benchmarks/rollouts.py [--prompts 32 --group 8 --level 4 --segments 4,8,16 --first 2,4]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import reason
from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model
from tasks.arith.problems import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--level", type=int, default=4)
    parser.add_argument("--segments", default="4,8,16", help="TreePO segment lengths, comma-separated")
    parser.add_argument("--first", default="2,4", help="TreePO first divergences, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    problems = generate(args.level, args.prompts, seed=args.seed)
    prompts, answers = [p.prompt for p in problems], [str(p.answer) for p in problems]
    settings: list[tuple[str, dict]] = [("independent samples", {"strategy": "best_of_n", "select": "majority"})]
    for seg in (int(x) for x in args.segments.split(",")):
        for first in (int(x) for x in args.first.split(",")):
            settings.append((f"TreePO segment {seg}, first divergence {first}",
                             {"strategy": "treepo", "segment_tokens": seg, "first_divergence": first}))
    stats: dict[str, dict[str, list[float]]] = {label: {"gen": [], "leaf": [], "s": [], "reward": []}
                                                  for label, _ in settings}
    for repeat in range(args.repeats):  # interleaved, so machine-speed drift hits every setting alike
        for label, options in settings:
            made = engine.ledger.generated_tokens
            start = time.perf_counter()
            records = reason.rollout(engine, prompts, n=args.group, answers=answers, verifier="arith",
                                     seed=args.seed + repeat, max_tokens=128, **options)
            s = stats[label]
            s["s"].append((time.perf_counter() - start) / len(prompts))
            s["gen"].append((engine.ledger.generated_tokens - made) / len(prompts))
            s["leaf"].append(sum(len(r.completion_ids) for r in records) / len(prompts))
            s["reward"].append(statistics.fmean(r.reward for r in records))
    base = statistics.fmean(stats["independent samples"]["gen"])
    print(f"{args.prompts} level-{args.level} arith prompts, group {args.group}, {args.repeats} repeats")
    print(f"{'setting':40s} {'gen tok/group':>13s} {'leaf tok/group':>14s} {'gen vs indep':>12s} "
          f"{'s/group':>8s} {'reward':>7s}")
    for label, _ in settings:
        s = stats[label]
        gen = statistics.fmean(s["gen"])
        print(f"{label:40s} {gen:13.0f} {statistics.fmean(s['leaf']):14.0f} {gen / base:12.2f} "
              f"{statistics.median(s['s']):8.3f} {statistics.fmean(s['reward']):7.3f}")


if __name__ == "__main__":
    main()
