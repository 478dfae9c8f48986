"""The pairwise (Bradley-Terry) loss on sibling preference pairs: the loss itself, a few steps of
training on the bundled tiny arith policy that rank the training pairs the right way round (and the
wrong way round when the pairs are swapped), and the within-problem AUC."""

from __future__ import annotations

import math

import pytest
import torch

from rewards.learn.metrics import prm_pair_accuracy, value_pair_accuracy, within_group_auc
from rewards.learn.targets import PreferencePair
from rewards.learn.trainer import TrainConfig, _load_backbone, pair_loss, train_step_prm, train_value_head
from rewards.value import LMValueModel
from tasks.registry import resolve_model

# (question, prefix, right step, a plausible slip)
CASES = [("19*6+5", "", "19*6=114\n", "19*6=134\n"), ("7*(4*8-13)", "4*8=32\n", "32-13=19\n", "32-13=11\n"),
         ("120*9-3", "", "120*9=1080\n", "120*9=980\n"), ("2+3*4", "3*4=12\n", "2+12=14\n", "2+12=15\n"),
         ("8*7-20", "", "8*7=56\n", "8*7=54\n"), ("25+13*3", "", "13*3=39\n", "13*3=36\n"),
         ("(9+8)*4", "", "9+8=17\n", "9+8=16\n"), ("6*9+11", "6*9=54\n", "54+11=65\n", "54+11=75\n")]


def pairs(swap: bool = False) -> list[PreferencePair]:
    out = []
    for q, prefix, right, wrong in CASES:
        chosen, rejected = (wrong, right) if swap else (right, wrong)
        out.append(PreferencePair(problem=q, question=q, prefix=prefix, chosen=chosen, rejected=rejected,
                                  chosen_value=1.0, rejected_value=0.0, chosen_count=2, rejected_count=2))
    return out


def config(tmp_path, name: str) -> TrainConfig:
    return TrainConfig(base=resolve_model("arith"), out=str(tmp_path / name), max_steps=12, batch_size=8, lr=3e-3,
                       warmup_steps=0, pair_weight=1.0, device="cpu", progress=False)


def test_pair_loss_values_and_direction():
    logits = torch.tensor([[[0.0], [2.0]], [[1.0], [0.0]]])  # one label: two rows of two positions
    both = torch.tensor([[0, 1, 1, 1], [1, 0, 0, 0]])  # 2.0 vs 0.0, then 1.0 vs 0.0
    got = pair_loss(logits, both, torch.tensor([1.0, 1.0]))
    want = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert pair_loss(logits, both[:, [2, 3, 0, 1]], torch.tensor([1.0, 1.0])).item() > got.item()
    assert pair_loss(logits, torch.zeros((0, 4), dtype=torch.long), torch.zeros(0)).item() == 0.0
    two = torch.tensor([[[0.0, 0.0], [0.0, 3.0]]])  # two labels: the score is label 1's logit over label 0's
    assert pair_loss(two, torch.tensor([[0, 1, 0, 0]]), torch.tensor([1.0])).item() == pytest.approx(math.log1p(math.exp(-3.0)), rel=1e-5)


def test_value_head_learns_the_training_pairs_either_way_round(tmp_path):
    fresh, tok = _load_backbone(resolve_model("arith"), 1, "cpu", 0)
    before = value_pair_accuracy(LMValueModel(fresh, tok), pairs())
    model, summary = train_value_head([], config(tmp_path, "v"), pairs())
    assert summary["items"] == len(CASES)
    after = value_pair_accuracy(model, pairs())
    assert after >= 0.99 > before
    swapped, _ = train_value_head([], config(tmp_path, "s"), pairs(swap=True))
    assert value_pair_accuracy(swapped, pairs()) <= 0.01


def test_prm_learns_the_training_pairs(tmp_path):
    prm, summary = train_step_prm([], config(tmp_path, "p"), separator="\n", question_separator="\n", pairs=pairs())
    assert summary["items"] == len(CASES)
    assert prm_pair_accuracy(prm, pairs(), "\n") >= 0.99
    assert prm_pair_accuracy(prm, pairs(swap=True), "\n") <= 0.01


def test_pairs_are_ignored_without_a_pair_weight(tmp_path):
    cfg = config(tmp_path, "none").model_copy(update={"pair_weight": 0.0})
    with pytest.raises(Exception, match="nothing to train on"):
        train_value_head([], cfg, pairs())


def test_within_group_auc_averages_groups_with_both_labels():
    scores = [0.9, 0.1, 0.2, 0.8, 0.5, 0.6]
    labels = [1, 0, 1, 0, 1, 1]
    groups = ["a", "a", "b", "b", "c", "c"]
    got, n = within_group_auc(scores, labels, groups)
    assert n == 2 and got == pytest.approx(0.5)  # a: 1.0, b: 0.0, c has positives only
    assert math.isnan(within_group_auc([0.1], [1], ["a"])[0])
