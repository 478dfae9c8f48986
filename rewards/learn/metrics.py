"""How well a value model or PRM ranks held-out targets: AUC (the chance a right one outranks a
wrong one), AUC within each problem, mean absolute error against the soft targets, and the share
of preference pairs ranked the right way round."""

from __future__ import annotations

from collections.abc import Sequence

from rewards.base import ProcessRewardModel, ValueModel
from rewards.learn.targets import PreferencePair, StepLabels, ValueTarget


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
    """Held-out AUC (targets with value >= 0.5 as positives), the AUC within each problem
    (:func:`within_group_auc`) and mean absolute error of ``model``."""
    if not targets:
        return {}
    got = model.value_batch([(t.question, t.partial) for t in targets]).values
    within, _ = within_group_auc(got, [t.value for t in targets], [t.problem for t in targets])
    return {"heldout_targets": float(len(targets)), "heldout_auc": auc(got, [t.value for t in targets]),
            "heldout_within_auc": within, "heldout_mae": sum(abs(g - t.value) for g, t in zip(got, targets)) / len(targets)}


def prm_report(prm: ProcessRewardModel, items: Sequence[StepLabels]) -> dict[str, float]:
    """Held-out AUC and mean absolute error of ``prm``'s step scores against the step labels."""
    if not items:
        return {}
    got = [s for row in prm.score_batch([(i.question, i.steps) for i in items]).scores for s in row]
    want = [y for i in items for y in i.labels]
    return {"heldout_steps": float(len(want)), "heldout_auc": auc(got, want),
            "heldout_mae": sum(abs(g - y) for g, y in zip(got, want)) / len(want)}


def within_group_auc(scores: Sequence[float], labels: Sequence[float], groups: Sequence[object]) -> tuple[float, int]:
    """``(mean AUC, groups)``: the :func:`auc` within each group (e.g. one problem's prefixes) that has
    both positives and negatives, averaged over those groups (NaN and 0 when none has both). It asks
    what a search needs, which of two prefixes of the *same* problem is better; an AUC over all
    groups together also rewards ranking easy problems above hard ones."""
    by: dict[object, tuple[list[float], list[float]]] = {}
    for s, y, g in zip(scores, labels, groups):
        by.setdefault(g, ([], []))[0].append(s)
        by[g][1].append(y)
    per = [auc(s, y) for s, y in by.values()]
    per = [a for a in per if a == a]  # NaN: one kind only
    return (sum(per) / len(per) if per else float("nan")), len(per)


def value_pair_accuracy(model: ValueModel, pairs: Sequence[PreferencePair]) -> float:
    """Share of preference pairs whose chosen side (``prefix + chosen``) ``model`` values above the
    rejected side, ties counting half (NaN without pairs)."""
    if not pairs:
        return float("nan")
    chosen = model.value_batch([(p.question, p.prefix + p.chosen) for p in pairs]).values
    rejected = model.value_batch([(p.question, p.prefix + p.rejected) for p in pairs]).values
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(pairs)


def prm_pair_accuracy(prm: ProcessRewardModel, pairs: Sequence[PreferencePair], delimiter: str) -> float:
    """As :func:`value_pair_accuracy` for a PRM: each side's score is that of its last step."""
    def steps(text: str) -> list[str]:
        return [s for s in text.split(delimiter) if s.strip()]

    pairs = [p for p in pairs if steps(p.prefix + p.chosen) and steps(p.prefix + p.rejected)]
    if not pairs:
        return float("nan")
    chosen = prm.score_batch([(p.question, steps(p.prefix + p.chosen)) for p in pairs]).scores
    rejected = prm.score_batch([(p.question, steps(p.prefix + p.rejected)) for p in pairs]).scores
    return sum(1.0 if c[-1] > r[-1] else 0.5 if c[-1] == r[-1] else 0.0 for c, r in zip(chosen, rejected)) / len(pairs)
