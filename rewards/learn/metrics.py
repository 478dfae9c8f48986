"""How well a value model or PRM ranks held-out targets: AUC (the chance a right one outranks a
wrong one) and mean absolute error against the soft targets."""

from __future__ import annotations

from collections.abc import Sequence

from rewards.base import ProcessRewardModel, ValueModel
from rewards.learn.targets import StepLabels, ValueTarget


def auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a positive (label > 0.5) outranks a negative,
    ties counting half (NaN without both kinds)."""
    pos = sum(1 for y in labels if y > 0.5)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    ranked = sorted(zip(scores, labels), key=lambda p: p[0])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties, then the Mann-Whitney U statistic
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        rank_sum += ((i + j) / 2 + 1) * sum(1 for k in range(i, j + 1) if ranked[k][1] > 0.5)
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def value_report(model: ValueModel, targets: Sequence[ValueTarget]) -> dict[str, float]:
    """Held-out AUC (targets with value >= 0.5 as positives) and mean absolute error of ``model``."""
    if not targets:
        return {}
    got = model.value_batch([(t.question, t.partial) for t in targets]).values
    return {"heldout_targets": float(len(targets)), "heldout_auc": auc(got, [t.value for t in targets]),
            "heldout_mae": sum(abs(g - t.value) for g, t in zip(got, targets)) / len(targets)}


def prm_report(prm: ProcessRewardModel, items: Sequence[StepLabels]) -> dict[str, float]:
    """Held-out AUC and mean absolute error of ``prm``'s step scores against the step labels."""
    if not items:
        return {}
    got = [s for row in prm.score_batch([(i.question, i.steps) for i in items]).scores for s in row]
    want = [y for i in items for y in i.labels]
    return {"heldout_steps": float(len(want)), "heldout_auc": auc(got, want),
            "heldout_mae": sum(abs(g - y) for g, y in zip(got, want)) / len(want)}
