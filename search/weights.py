"""The arithmetic of particle filtering: PF weights from PRM scores, effective sample size,
ePF's annealing temperature and resampling (see :mod:`search.particle` for how they are used)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from reason.core.errors import ReasonError


def logit(score: float) -> float:
    """``log(s / (1 - s))`` of a score clipped to ``[1e-4, 1 - 1e-4]``."""
    p = min(max(score, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def softmax(values: Sequence[float], temperature: float = 1.0) -> list[float]:
    """``exp(v_i / temperature)`` normalised to sum to 1."""
    scaled = [v / temperature for v in values]
    top = max(scaled)
    exps = [math.exp(x - top) for x in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def softmax_weights(scores: list[float], temperature: float) -> list[float]:
    """Softmax of ``logit(score) / temperature`` (the PF weights of PRM scores)."""
    return softmax([logit(s) for s in scores], temperature)


def ess(weights: Sequence[float]) -> float:
    """Effective sample size ``1 / sum(p_i ** 2)`` of normalised weights, each clipped to
    ``[1e-7, 1 - 1e-7]`` as its_hub does."""
    return 1.0 / sum(min(max(w, 1e-7), 1 - 1e-7) ** 2 for w in weights)


def annealing_temperature(probabilities: Sequence[float], step: int, max_steps: int, free: int, *,
                          ess_threshold: float = 0.5, phase: float = 0.5) -> float:
    """ePF's entropic-annealing temperature (its_hub, ``"ess"`` method): ``max(1, (free / ESS) *
    (1 - step / max_steps))`` when ``ESS / free < ess_threshold`` and ``step / max_steps < phase``,
    else 1; ``free`` is the number of slots being resampled (1 or fewer: always 1)."""
    if free <= 1:
        return 1.0
    progress = step / max_steps
    ratio = ess(probabilities) / free
    if ratio < ess_threshold and progress < phase:
        return max(1.0, (1.0 - progress) / ratio)
    return 1.0


def resample(weights: list[float], n: int, u: Callable[[], float], how: str) -> list[int]:
    """``n`` indices drawn by ``multinomial`` or ``systematic`` resampling."""
    cdf, acc = [], 0.0
    for w in weights:
        acc += w
        cdf.append(acc)
    cdf[-1] = 1.0
    if how == "systematic":
        start = u() / n
        points = [start + i / n for i in range(n)]
    elif how == "multinomial":
        points = sorted(u() for _ in range(n))
    else:
        raise ReasonError("resampling", f"unknown resampling {how!r}", "use multinomial or systematic")
    out, j = [], 0
    for p in points:
        while cdf[j] < p:
            j += 1
        out.append(j)
    return out
