"""GRPO on the bundled arith model with TRL, rollouts grown by this toolkit, on CPU in minutes.

TRL's ``GRPOTrainer`` trains; :class:`reason.rl.trl.TreeRollout` is its ``rollout_func``: TreePO
segment trees (``--rollout treepo``) or independent samples (``--rollout sample``, the baseline),
both from the engine that shares the trainer's model. The reward is the arith verifier. Before and
after training, accuracy on held-out problems (one sample each at temperature 0.7, 95% bootstrap
interval); per step, the tokens the rollouts generated and the wall time.

Run: ``python examples/grpo_arith.py [--steps 150 --rollout treepo|sample --group 8 --prompts 4]`` (about 2 minutes)
(needs ``pip install 'reason[rl]'``).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def held_out_accuracy(model, tokenizer, problems, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of one sample per problem, with a 95% bootstrap interval."""
    from reason.core.engine.hf import HFEngine
    from reason.shortcuts import solve_many

    was_training = model.training
    model.eval()
    engine = HFEngine(model, tokenizer)
    results = solve_many(engine, [p.question for p in problems], strategy="sample", budget=1, seed=seed,
                         temperature=0.7)
    model.train(was_training)
    correct = [float(r.answer is not None and r.answer.strip() == str(p.answer)) for r, p in zip(results, problems)]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(correct, k=len(correct))) for _ in range(1000))
    return statistics.fmean(correct), means[25], means[974]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rollout", choices=("treepo", "sample"), default="treepo")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (GRPO group size)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--advantages", choices=("tree", "segment", "grpo"), default="grpo",
                        help="tree: each leaf's aggregated tree advantage; segment: each token its segment's "
                             "credit; grpo: TRL's group-normalised rewards")
    parser.add_argument("--segment-tokens", type=int, default=8, help="TreePO segment length")
    parser.add_argument("--first-divergence", default="2-8",
                        help="TreePO branches at the root: a number, or LOW-HIGH drawn per tree")
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/grpo_arith")
    args = parser.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tasks.registry import resolve_model
    from reason.rl.trl import TreeRollout, tree_grpo_trainer
    from rewards import verifiers
    from rewards.base import VerifyItem
    from tasks.arith.problems import generate

    path = resolve_model("arith")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = generate(3, args.steps * args.prompts, seed=1000 + args.seed)
    held_out = generate(3, args.held_out, seed=2000)
    verifier = verifiers.get("arith")()

    def arith_reward(prompts, completions, answer, **_):
        items = [VerifyItem(p, c, str(a)) for p, c, a in zip(prompts, completions, answer)]
        return [float(x) for x in verifier.verify_batch(items)]

    answers = {p.prompt: str(p.answer) for p in train}
    if args.rollout == "treepo":
        low, _, high = args.first_divergence.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())):
            parser.error(f"--first-divergence: {args.first_divergence!r} is not a number or LOW-HIGH (e.g. 2 or 2-8)")
        first = (int(low), int(high)) if high else int(low)
        rollout = TreeRollout(answers=answers, seed=args.seed, segment_tokens=args.segment_tokens,
                              first_divergence=first, max_tokens=96)
    else:
        rollout = TreeRollout(strategy="best_of_n", answers=answers, seed=args.seed, select="majority", max_tokens=96)
    config = GRPOConfig(output_dir=args.out, per_device_train_batch_size=args.group * args.prompts,
                        num_generations=args.group, max_completion_length=96, learning_rate=args.lr,
                        max_steps=args.steps, logging_steps=max(1, args.steps // 10), report_to=[], use_cpu=True,
                        save_strategy="no", seed=args.seed, shuffle_dataset=False)
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": str(p.answer)} for p in train])
    if args.advantages == "grpo":
        make = GRPOTrainer
    else:
        make = functools.partial(tree_grpo_trainer, per="leaf" if args.advantages == "tree" else "segment")
    trainer = make(model=model, processing_class=tokenizer, reward_funcs=arith_reward, args=config,
                   train_dataset=dataset, rollout_func=rollout)

    before = held_out_accuracy(model, tokenizer, held_out, args.seed)
    tokens: list[int] = []
    seconds: list[float] = []
    original = rollout.__call__

    def timed(prompts, trainer_):
        start = time.perf_counter()
        made = rollout.engine.ledger.generated_tokens if rollout.engine else 0
        out = original(prompts, trainer_)
        seconds.append(time.perf_counter() - start)
        tokens.append(rollout.engine.ledger.generated_tokens - made)
        return out

    trainer.rollout_func = timed
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    after = held_out_accuracy(model, tokenizer, held_out, args.seed)
    print(f"rollout={args.rollout} advantages={args.advantages} steps={args.steps} group={args.group} "
          f"prompts/step={args.prompts}")
    print(f"held-out accuracy ({len(held_out)} level-3 problems, 1 sample at T=0.7): "
          f"before {before[0]:.3f} [{before[1]:.3f}, {before[2]:.3f}]  after {after[0]:.3f} [{after[1]:.3f}, {after[2]:.3f}]")
    print(f"rollout tokens per step {statistics.fmean(tokens):.0f}; rollout s per step {statistics.fmean(seconds):.2f}; "
          f"train wall {wall:.1f} s ({wall / args.steps:.2f} s per step)")


if __name__ == "__main__":
    main()
