"""``reason train-value`` / ``reason train-prm`` on trees of a real arith search: the checkpoints
load through the usual specs (``lm=DIR``, ``token-classification=DIR``), runs are seeded, and bad
input is a one-line error. Also the scorer wrapper's ensemble and path smoothing."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from click.testing import CliRunner

from reason.cli import main
from rewards.base import ValueModel, Values
from rewards.catalog import load_prm, load_value
from rewards.learn.trees import read_trees
from rewards.scoring import NodeValuer
from rewards.value import EnsembleValue


@pytest.fixture(scope="module")
def saved_trees(tmp_path_factory):
    """A ``reason eval --save-trees`` run: MCTS with rollouts on 6 level-2 problems at budget 4."""
    path = tmp_path_factory.mktemp("trees") / "run.jsonl"
    result = CliRunner().invoke(main, ["eval", "--suite", "arith:2", "--limit", "6", "--strategy", "mcts", "--budget", "4",
                                       "-o", "evaluate=rollout", "--dtype", "float32", "--device", "cpu",
                                       "--out", str(path), "--save-trees"])
    assert result.exit_code == 0, result.output
    return path


def train(kind: str, trees, out, *extra: str):
    result = CliRunner().invoke(main, [kind, str(trees), "--out", str(out), "--max-steps", "2", "--batch-size", "8",
                                       "--holdout", "0.3", "--device", "cpu", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_train_value_checkpoint_loads_as_lm_spec_and_is_seeded(saved_trees, tmp_path):
    summary = train("train-value", saved_trees, tmp_path / "v1", "--seed", "3", "--save-targets", str(tmp_path / "t.json"))
    assert summary["load"] == f"--value lm={tmp_path / 'v1'}"
    assert summary["targets"] > 0 and summary["steps"] == 2
    assert json.loads((tmp_path / "t.json").read_text())["values"]
    train("train-value", saved_trees, tmp_path / "v2", "--seed", "3")
    items = [("2+3*4", ""), ("2+3*4", "3*4=12\n"), ("2+3*4", "3*4=12\n2+12=14\nanswer: 14")]
    one = load_value(f"lm={tmp_path / 'v1'}", dtype="float32").value_batch(items).values
    two = load_value(f"lm={tmp_path / 'v2'}", dtype="float32").value_batch(items).values
    assert all(0.0 <= v <= 1.0 for v in one)
    assert one == pytest.approx(two, abs=1e-6)


def test_train_prm_checkpoint_keeps_its_separators(saved_trees, tmp_path):
    summary = train("train-prm", saved_trees, tmp_path / "p")
    assert summary["solutions"] > 0
    prm = load_prm(f"token-classification={tmp_path / 'p'}", dtype="float32")
    assert prm.separator_ids == prm.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert prm.question_ids == prm.separator_ids
    scores = prm.score("2+3*4", ["3*4=12", "2+12=14", "answer: 14"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)


def test_bad_inputs_are_one_line_errors(saved_trees, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["train-value", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"id": "x", "gold": "1"}) + "\n", encoding="utf-8")
    none = runner.invoke(main, ["train-prm", str(bare), "--out", str(tmp_path / "o")])
    assert none.exit_code == 2 and "no saved tree" in none.output
    leak = runner.invoke(main, ["train-value", str(saved_trees), "--out", str(tmp_path / "o"), "--exclude-suite", "arith:2"])
    assert leak.exit_code == 2 and "nothing to train on" in leak.output  # every problem is the test suite's
    zero = runner.invoke(main, ["train-value", str(saved_trees), "--out", str(tmp_path / "o"), "--epochs", "0"])
    assert zero.exit_code == 2 and "epochs" in zero.output
    bad_lambda = runner.invoke(main, ["train-value", str(saved_trees), "--out", str(tmp_path / "o"), "--td-lambda", "2"])
    assert bad_lambda.exit_code == 2 and "td_lambda" in bad_lambda.output
    negative = runner.invoke(main, ["train-value", str(saved_trees), "--out", str(tmp_path / "o"), "--pair-weight", "-1"])
    assert negative.exit_code == 2 and "pair-weight" in negative.output
    margin = runner.invoke(main, ["train-prm", str(saved_trees), "--out", str(tmp_path / "o"), "--pair-margin", "0"])
    assert margin.exit_code == 2 and "pair-margin" in margin.output


def test_pair_options_reach_the_trainer(saved_trees, tmp_path):
    """The pairs are learned only with --pair-weight (both commands); both report the held-out pair
    accuracy."""
    prm = train("train-prm", saved_trees, tmp_path / "p", "--holdout", "0", "--pair-weight", "1")
    plain = train("train-prm", saved_trees, tmp_path / "q", "--holdout", "0")
    value = train("train-value", saved_trees, tmp_path / "v", "--holdout", "0")
    paired = train("train-value", saved_trees, tmp_path / "w", "--holdout", "0", "--pair-weight", "1", "--pair-margin", "0.1")
    assert prm["pairs"] > 0 and plain["pairs"] == 0 and value["pairs"] == 0 and paired["pairs"] >= prm["pairs"]
    assert paired["items"] > value["items"] and prm["items"] > plain["items"]  # the pairs are rows of their own
    assert "heldout_pair_accuracy" in value and "heldout_pair_accuracy" in prm


class LengthValue(ValueModel):
    """A value model whose value is the partial solution's length over 100 (plus ``shift``)."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        return Values([len(p) / 100 + self.shift for _, p in items], 0)


def test_ensemble_and_path_smoothing(saved_trees):
    tree = read_trees([saved_trees])[0]
    deep = max(tree, key=lambda n: n.depth)
    plain = NodeValuer(LengthValue()).value(tree, [deep])[0]
    assert plain == pytest.approx(len(tree.text(deep)) / 100)
    mean = NodeValuer(EnsembleValue([LengthValue(), LengthValue(0.2)]), name="e").value(tree, [deep])[0]
    assert mean == pytest.approx(plain + 0.1)
    smooth = NodeValuer(LengthValue(), name="s", smoothing=0.5)
    got = smooth.value(tree, [deep])[0]
    want = None
    for n in tree.path(deep):
        v = len(tree.text(n)) / 100
        want = v if want is None else 0.5 * v + 0.5 * want
    assert got == pytest.approx(want) and got < plain  # ancestors (shorter prefixes) pull it down
    assert tree.root.scores["s"] == 0.0  # the ancestors were valued once, raw values cached
    with pytest.raises(Exception, match="smoothing"):
        NodeValuer(LengthValue(), smoothing=1.0)
