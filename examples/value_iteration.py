"""The self-improvement loop on arith: search, turn the trees into targets, train, search again.

Each round searches train-split problems with MCTS guided by the current value model (the bundled
one first; ``--collect rollout``: MCTS with rollouts, which grades every new step), keeps the trees (saved as JSONL under ``--out`` and read back with
:func:`rewards.learn.trees.read_trees`), builds targets from every tree so far
(:func:`rewards.learn.targets.build_targets`: MC values graded only by the final answer, TD(lambda)
with ``--td-lambda``), and fine-tunes from the policy's own weights a value head
(:func:`rewards.learn.trainer.train_value_head`) and a PRM from the step labels alone
(:func:`rewards.learn.trainer.train_step_prm`; no exact step checker), both also on the trees'
sibling preference pairs with a Bradley-Terry loss with ``--pair-weight`` (value head) and
``--prm-pair-weight`` (PRM); both off by default, as they did not make the searches better. The checkpoints are then
loaded back as ``--value lm=DIR`` and ``--prm token-classification=DIR`` and the round's held-out
table is measured on test-split problems (never searched for training):

* the value model's AUC within the level: held-out rollout prefixes labelled by their rollout's
  outcome (as ``tasks.arith.train_value`` measures it), next to the exact step checker's AUC on
  the same prefixes (what "on track so far" alone reaches), and the AUC within a problem
  (:func:`within_auc`: averaged over the problems whose rollouts are both right and wrong; what
  MCTS needs, since it only compares prefixes of one problem);
* accuracy and generated tokens per problem at each budget ``b`` (solution-equivalents of tokens,
  so every strategy spends about the same): MCTS with the learned value at ``b`` and at ``b / 2``,
  MCTS with rollouts (exact PRM, as in benchmarks/RESULTS.md; run once), particle filtering and
  best-of-N with the learned PRM, and majority vote over best-of-N's samples.

After the last round, ``--measure-smoothing`` also runs MCTS (value) at the first budget with the
value estimates averaged over every round's value model and smoothed along the path
(:class:`rewards.scoring.NodeValuer` ``smoothing``), with their AUCs.

Run: ``python examples/value_iteration.py`` (3 rounds; sized for about 30 minutes on a quiet
2-core machine) or ``--quick`` (a couple of minutes; the test runs it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from reason.core.engine.hf import HFEngine
from reason.shortcuts import solve_many
from rewards import verifiers
from rewards.catalog import load_prm, load_value
from rewards.learn.metrics import within_group_auc
from rewards.learn.targets import answer_grader, build_targets, check_disjoint, split_by_problem
from rewards.learn.trainer import PRM_PAIR_WEIGHT, VALUE_PAIR_WEIGHT, TrainConfig, train_step_prm, train_value_head
from rewards.learn.trees import read_trees
from rewards.scoring import NodeValuer
from rewards.value import EnsembleValue
from tasks.arith.problems import generate
from tasks.arith.scorers import ArithPRM
from tasks.arith.solutions import sample_solutions
from tasks.arith.train_value import auc
from tasks.metrics import bootstrap_ci
from tasks.registry import get_domain, resolve_model

QUICK = dict(rounds=1, train=12, train_budget=4, test=12, budgets="4", auc_problems=8, epochs=1.0)


def held_out_prefixes(engine, problems, samples: int, seed: int) -> list[dict]:
    """Every step-boundary prefix of ``samples`` rollouts per problem, labelled by its rollout's
    outcome, with the exact checker's on-track verdict (the ceiling of "no wrong step yet")."""
    checker, out = ArithPRM(), []
    for rollouts in sample_solutions(engine, problems, samples, 0.8, seed):
        for j, r in enumerate(rollouts):
            steps = r.steps
            ok = checker.check(r.problem.question, steps) if steps else []
            for k in range(len(steps) + 1):
                out.append({"question": r.problem.question, "partial": "".join(s + "\n" for s in steps[:k]),
                            "label": 1.0 if r.correct else 0.0, "on_track": float(all(ok[:k])),
                            "rollout": (r.problem.question, j)})
    return out


def value_auc(model, prefixes: list[dict], smoothing: float = 0.0) -> float:
    """AUC of ``model`` on the prefixes; ``smoothing`` applies the path smoothing of NodeValuer."""
    raw = model.value_batch([(p["question"], p["partial"]) for p in prefixes]).values
    if smoothing:
        last: dict = {}
        for i, p in enumerate(prefixes):  # a rollout's prefixes come in order, the empty one first
            prev = last.get(p["rollout"]) if p["partial"] else None
            raw[i] = raw[i] if prev is None else (1 - smoothing) * raw[i] + smoothing * prev
            last[p["rollout"]] = raw[i]
    return auc(raw, [p["label"] for p in prefixes])


def within_auc(model, prefixes: list[dict]) -> float:
    """``model``'s AUC within each problem of the prefixes, averaged over the problems with both
    right and wrong rollouts."""
    raw = model.value_batch([(p["question"], p["partial"]) for p in prefixes]).values
    return within_group_auc(raw, [p["label"] for p in prefixes], [p["question"] for p in prefixes])[0]


def majority_correct(result, answer: str) -> bool:
    """Majority vote over a best-of-N result's samples (each candidate counted ``count`` times)."""
    votes: Counter = Counter()
    for c in result.candidates:
        if c.answer is not None:
            votes[c.answer] += c.count
    return bool(votes) and votes.most_common(1)[0][0] == answer


def run(engine, problems, budget: int, seed: int, **options) -> tuple[list, float, float, tuple[float, float]]:
    """Results, accuracy, generated tokens per problem and a 95% bootstrap interval."""
    results = solve_many(engine, [p.question for p in problems], budget=budget, seed=seed, **options)
    right = [float(r.answer == str(p.answer)) for r, p in zip(results, problems)]
    tokens = sum(r.ledger.generated_tokens for r in results) / len(results)
    return results, sum(right) / len(right), tokens, bootstrap_ci(right, seed=seed)


def cell(acc: float, tokens: float) -> str:
    return f"{acc:.3f} ({tokens:.0f})"


def evaluate_round(engine, problems, budgets, exact, value, prm, seed, baseline: dict) -> dict:
    """The round's accuracy cells by column (see the module docstring)."""
    row: dict[str, str] = {}
    for b in budgets:
        for n in (max(1, b // 2), b):
            _, acc, tok, _ = run(engine, problems, n, seed, strategy="mcts", prm=exact, value=value, evaluate="value")
            row[f"MCTS value n={n}"] = cell(acc, tok)
        key = f"MCTS rollout n={b}"
        if key not in baseline:
            _, acc, tok, _ = run(engine, problems, b, seed, strategy="mcts", prm=exact, evaluate="rollout")
            baseline[key] = cell(acc, tok)
        row[key] = baseline[key]
        if prm is not None:
            _, acc, tok, _ = run(engine, problems, b, seed, strategy="particle", prm=prm)
            row[f"particle n={b}"] = cell(acc, tok)
            results, acc, tok, _ = run(engine, problems, b, seed, strategy="best_of_n", prm=prm)
            row[f"best-of-N n={b}"] = cell(acc, tok)
            maj = sum(majority_correct(r, str(p.answer)) for r, p in zip(results, problems)) / len(problems)
            row[f"majority n={b}"] = cell(maj, tok)
    return row


def save_trees(results, path: Path) -> None:
    """One JSONL row per problem: its id and its tree (what the target builder reads)."""
    with path.open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"id": r.tree.meta.get("id"), "tree": r.tree.to_dict()}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", type=int, default=3)
    parser.add_argument("--train", type=int, default=300, help="train-split problems searched per round")
    parser.add_argument("--train-budget", type=int, default=16)
    parser.add_argument("--test", type=int, default=200, help="test-split problems for the accuracy table")
    parser.add_argument("--budgets", default="16,64")
    parser.add_argument("--auc-problems", type=int, default=100, help="test-split problems for the AUC (8 rollouts each)")
    parser.add_argument("--td-lambda", type=float, default=None, help="TD(lambda) value targets (default: MC values)")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--pair-weight", type=float, default=VALUE_PAIR_WEIGHT,
                        help="value head: weight of the Bradley-Terry loss on the trees' sibling preference pairs (0: off)")
    parser.add_argument("--prm-pair-weight", type=float, default=PRM_PAIR_WEIGHT, help="the same for the PRM")
    parser.add_argument("--collect", choices=("value", "rollout"), default="value",
                        help="training searches: MCTS with the current value model, or MCTS with rollouts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-smoothing", action="store_true", help="after the last round: ensemble and path smoothing")
    parser.add_argument("--out", type=Path, default=Path("runs/value_iteration"))
    parser.add_argument("--quick", action="store_true", help="a tiny setting that finishes in a couple of minutes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a loaded machine's cores are better shared by processes than threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    policy = resolve_model("arith")
    engine = HFEngine.from_pretrained(policy, dtype="float32", device="cpu")
    domain = get_domain("arith")
    grade = answer_grader(domain.extract_answer, verifiers.get(domain.verifier)())
    budgets = [int(b) for b in args.budgets.split(",")]
    test = generate(args.level, args.test, seed=args.seed, split="test")
    train_pool = generate(args.level, args.train * args.rounds, seed=args.seed + 1, split="train")
    prefixes = held_out_prefixes(engine, generate(args.level, args.auc_problems, seed=args.seed + 2, split="test"), 8,
                                 args.seed)
    exact, value, prm = load_prm("arith"), load_value("arith"), None
    ceiling = auc([p["on_track"] for p in prefixes], [p["label"] for p in prefixes])
    within_ceiling, groups = within_group_auc([p["on_track"] for p in prefixes], [p["label"] for p in prefixes],
                                              [p["question"] for p in prefixes])
    print(f"held-out AUC set: {len(prefixes)} prefixes of level-{args.level} rollouts; exact step checker's AUC "
          f"{ceiling:.3f}, within a problem {within_ceiling:.3f} ({groups} problems with both outcomes) "
          f"({time.time() - started:.0f}s)", flush=True)
    baseline: dict[str, str] = {}
    table, values = [], []
    for r in range(args.rounds + 1):
        if r:
            t0 = time.time()
            chunk = train_pool[(r - 1) * args.train: r * args.train]
            guide = dict(value=value, evaluate="value") if args.collect == "value" else dict(evaluate="rollout")
            results = solve_many(engine, [p.question for p in chunk], budget=args.train_budget, seed=args.seed + 1000 * r,
                                 strategy="mcts", prm=exact, **guide)
            save_trees(results, args.out / f"trees_round{r}.jsonl")
            trees = read_trees(sorted(args.out.glob("trees_round*.jsonl"))[:r])
            targets = build_targets(trees, grade, delimiter=domain.delimiter, td_lambda=args.td_lambda,
                                    exclude=[p.id for p in test])
            train_set, held = split_by_problem(targets, 0.0)
            check_disjoint(train_set, [p.id for p in test])
            config = dict(base=policy, epochs=args.epochs, lr=args.lr, seed=args.seed + r, device="cpu", progress=False)
            _, vsum = train_value_head(train_set.values, TrainConfig(out=str(args.out / f"value_round{r}"), **config,
                                                                     pair_weight=args.pair_weight), train_set.pairs)
            _, psum = train_step_prm(train_set.steps, TrainConfig(out=str(args.out / f"prm_round{r}"), **config,
                                                                  pair_weight=args.prm_pair_weight),
                                     separator=domain.delimiter, question_separator="\n", pairs=train_set.pairs)
            value = load_value(f"lm={args.out / f'value_round{r}'}", dtype="float32", device="cpu")
            prm = load_prm(f"token-classification={args.out / f'prm_round{r}'}", dtype="float32", device="cpu")
            values.append(value)
            print(f"round {r}: {len(trees)} trees, {len(train_set.values)} value targets, {len(train_set.steps)} "
                  f"step-labelled solutions, {len(train_set.pairs)} preference pairs; value loss {vsum['loss']:.3f}, "
                  f"PRM loss {psum['loss']:.3f} ({time.time() - t0:.0f}s)", flush=True)
        t0 = time.time()
        row = {"round": r, "AUC": f"{value_auc(value, prefixes):.3f}", "within AUC": f"{within_auc(value, prefixes):.3f}"}
        row.update(evaluate_round(engine, test, budgets, exact, value, prm, args.seed, baseline))
        row["s"] = f"{time.time() - t0:.0f}"
        table.append(row)
        print(json.dumps(row), flush=True)
    columns = [k for k in dict.fromkeys(k for row in table for k in row) if k != "s"] + ["s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in table]
    if args.measure_smoothing and values:
        lines.append("")
        b = budgets[0]
        for label, scorer, model, smooth in (
            ("last round", value, value, 0.0),
            (f"ensemble of {len(values)} rounds", EnsembleValue(values), EnsembleValue(values), 0.0),
            ("last round, smoothing 0.5", NodeValuer(value, smoothing=0.5), value, 0.5),
        ):
            _, acc, tok, (lo, hi) = run(engine, test, b, args.seed, strategy="mcts", prm=exact, value=scorer, evaluate="value")
            lines.append(f"{label}: AUC {value_auc(model, prefixes, smooth):.3f}, MCTS (value) n={b} accuracy {acc:.3f} "
                         f"({lo:.3f}-{hi:.3f}), {tok:.0f} tokens")
    print("\n" + "\n".join(lines))
    print(f"\naccuracy (generated tokens per problem) on {len(test)} level-{args.level} test problems; AUC on "
          f"{len(prefixes)} held-out prefixes (exact checker {ceiling:.3f}); total {time.time() - started:.0f}s")
    (args.out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
