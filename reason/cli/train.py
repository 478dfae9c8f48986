"""``reason train-value`` and ``reason train-prm``: fine-tune a value head or a PRM on targets built
from saved search trees (see :mod:`rewards.learn.targets`), from any causal LM checkpoint (the
policy's own weights by default). The checkpoint loads as ``--value lm=OUT`` / ``--prm
token-classification=OUT``."""

from __future__ import annotations

import json
from typing import Any

import click

from reason.cli.app import friendly, main
from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.learn.targets import (
    TargetSet,
    answer_grader,
    build_targets,
    check_disjoint,
    save_targets,
    split_by_problem,
)
from rewards.learn.trainer import PRM_PAIR_WEIGHT, VALUE_PAIR_WEIGHT, TrainConfig, train_step_prm, train_value_head
from rewards.learn.trees import read_trees
from rewards.learn.metrics import prm_pair_accuracy, prm_report, value_pair_accuracy, value_report
from tasks.registry import get_domain, load_suite, resolve_model


def train_options(fn: Any) -> Any:
    """Options both training commands share."""
    options = [
        click.argument("trees", nargs=-1, required=True, type=click.Path()),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write."),
        click.option("--model", "-m", default="arith", show_default=True,
                     help="The causal LM the backbone starts from: 'arith' (the bundled policy), a directory or hub id."),
        click.option("--suite", default="arith", show_default=True, help="Whose answer check and step delimiter to use."),
        click.option("--td-lambda", type=float, default=None, help="TD(lambda) targets from MCTS statistics (default: MC values)."),
        click.option("--min-count", type=int, default=1, show_default=True, help="Graded samples a target needs."),
        click.option("--holdout", type=float, default=0.1, show_default=True, help="Share of problems held out (by problem)."),
        click.option("--exclude-suite", "exclude", multiple=True, metavar="SUITE",
                     help="Drop the problems of this suite (e.g. the test suite you will evaluate on); repeatable."),
        click.option("--epochs", type=float, default=3.0, show_default=True),
        click.option("--max-steps", type=int, default=-1, help="Stop after this many optimizer steps (overrides --epochs)."),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", type=float, default=3e-4, show_default=True),
        click.option("--count-cap", type=int, default=8, show_default=True, help="Largest weight a target's count gives it."),
        click.option("--pair-margin", type=float, default=0.5, show_default=True,
                     help="Smallest difference of the siblings' MC values that makes a preference pair."),
        click.option("--pair-repeat", type=int, default=TrainConfig.model_fields["pair_repeat"].default, show_default=True,
                     help="Times each pair is shown per epoch."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)."),
        click.option("--save-targets", type=click.Path(dir_okay=False), default=None, help="Also write the targets as JSON."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _targets(trees: tuple[str, ...], suite: str, td_lambda: float | None, min_count: int, holdout: float,
             exclude: tuple[str, ...], save: str | None, margin: float) -> tuple[TargetSet, TargetSet, Any]:
    domain = get_domain(suite)
    grade = answer_grader(domain.extract_answer, verifiers.get(domain.verifier)())
    excluded = [key for spec in exclude for p in load_suite(spec) for key in (p.id, p.question)]
    targets = build_targets(read_trees(trees), grade, delimiter=domain.delimiter, td_lambda=td_lambda,
                            margin=margin, min_count=min_count, exclude=excluded)
    train, held = split_by_problem(targets, holdout)
    check_disjoint(train, held)
    check_disjoint(train, excluded)  # ids; questions were dropped by build_targets
    if save:
        save_targets(targets, save)
    return train, held, domain


def _config(out: str, model: str, epochs: float, max_steps: int, batch_size: int, lr: float, count_cap: int,
            seed: int, device: str | None, pair_weight: float, pair_margin: float, pair_repeat: int) -> TrainConfig:
    for field, value in (("epochs", epochs), ("batch-size", batch_size), ("lr", lr), ("count-cap", count_cap),
                         ("pair-repeat", pair_repeat)):
        if value <= 0:
            raise ReasonError(field, f"must be positive (got {value})", f"use e.g. --{field} {TrainConfig.model_fields[field.replace('-', '_')].default}")
    if pair_weight < 0:
        raise ReasonError("pair-weight", f"must be 0 or more (got {pair_weight})", "use e.g. --pair-weight 1, or 0 to train on values only")
    if not 0 < pair_margin <= 1:
        raise ReasonError("pair-margin", f"must be in (0, 1] (got {pair_margin})", "use e.g. --pair-margin 0.5")
    return TrainConfig(base=resolve_model(model), out=out, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                       lr=lr, count_cap=count_cap, seed=seed, device=device, pair_weight=pair_weight, pair_repeat=pair_repeat)


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        click.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


def pair_weight_option(default: float) -> Any:
    """``--pair-weight``, with the command's default (what measured better on arith level 3:
    benchmarks/RESULTS.md, "Within-problem training")."""
    return click.option("--pair-weight", type=float, default=default, show_default=True,
                        help="Weight of the Bradley-Terry loss on sibling preference pairs (0: pointwise targets only).")


@main.command("train-value")
@train_options
@pair_weight_option(VALUE_PAIR_WEIGHT)
@friendly
def train_value_command(trees: tuple[str, ...], out: str, model: str, suite: str, td_lambda: float | None,
                        min_count: int, holdout: float, exclude: tuple[str, ...], epochs: float, max_steps: int,
                        batch_size: int, lr: float, count_cap: int, pair_weight: float, pair_margin: float,
                        pair_repeat: int, seed: int, device: str | None, save_targets: str | None, as_json: bool) -> None:
    """Fine-tune a value head on the node values of saved search trees (TREES: JSONL records with
    trees, tree JSON files or directories of them), and on their sibling preference pairs with
    --pair-weight."""
    config = _config(out, model, epochs, max_steps, batch_size, lr, count_cap, seed, device, pair_weight, pair_margin,
                     pair_repeat)
    train, held, _ = _targets(trees, suite, td_lambda, min_count, holdout, exclude, save_targets, pair_margin)
    valuer, summary = train_value_head(train.values, config, train.pairs)
    summary = {"targets": len(train.values), "pairs": len(train.pairs) if pair_weight else 0,
               "problems": len(train.problems()), **summary, **value_report(valuer, held.values),
               "heldout_pair_accuracy": value_pair_accuracy(valuer, held.pairs), "load": f"--value lm={out}"}
    _report(summary, as_json)


@main.command("train-prm")
@train_options
@pair_weight_option(PRM_PAIR_WEIGHT)
@click.option("--question-separator", default=None, help="Text between the question and the first step (default: the step delimiter).")
@friendly
def train_prm_command(trees: tuple[str, ...], out: str, model: str, suite: str, td_lambda: float | None,
                      min_count: int, holdout: float, exclude: tuple[str, ...], epochs: float, max_steps: int,
                      batch_size: int, lr: float, count_cap: int, pair_weight: float, pair_margin: float,
                      pair_repeat: int, seed: int, device: str | None, save_targets: str | None, as_json: bool,
                      question_separator: str | None) -> None:
    """Fine-tune a token-classification PRM on per-step labels of saved search trees (TREES as for
    train-value); each step's label is the value of the tree node where it ends. With --pair-weight
    it also learns the sibling preference pairs (each side scored at its last step)."""
    config = _config(out, model, epochs, max_steps, batch_size, lr, count_cap, seed, device, pair_weight, pair_margin,
                     pair_repeat)
    train, held, domain = _targets(trees, suite, td_lambda, min_count, holdout, exclude, save_targets, pair_margin)
    sep = domain.delimiter
    prm, summary = train_step_prm(train.steps, config, separator=sep,
                                  question_separator=sep if question_separator is None else question_separator,
                                  pairs=train.pairs)
    summary = {"solutions": len(train.steps), "pairs": len(train.pairs) if pair_weight else 0,
               "problems": len(train.problems()), **summary, **prm_report(prm, held.steps),
               "heldout_pair_accuracy": prm_pair_accuracy(prm, held.pairs, sep), "load": f"--prm token-classification={out}"}
    _report(summary, as_json)
