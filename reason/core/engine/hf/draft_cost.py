"""Is drafting worth its cost? Measured acceptance against measured step cost.

Feeding draft tokens costs step time whether or not they are accepted; a sequence's draft pays when
the tokens it gets accepted, each worth the time a generated token costs, exceed the time its tokens
add. :class:`ForwardCost` measures the right-hand side while the engine runs: it fits a decode
step's time (drafting, forward, verification) as ``a + b * tokens fed`` by exponentially weighted
least squares and tracks the tokens a step yields per second. Their product, :meth:`ForwardCost.threshold`,
is the least number of accepted tokens a fed draft token must bring: near zero where a forward
costs the same for one token or twenty (a GPU at small batch), near one where the forward is
compute-bound (a CPU with many sequences), where drafting then switches itself off.
"""

from __future__ import annotations


class ForwardCost:
    """Online fit of decode-forward seconds against tokens fed, and the tokens yielded per second.

    ``decay`` weights past forwards (0.98: about the last 50 count). Until the fed token counts have
    varied enough to separate per-token from fixed cost, :meth:`threshold` is 0 (draft freely).
    """

    def __init__(self, decay: float = 0.98, warmup: int = 8) -> None:
        self.decay = decay
        self.warmup = warmup
        self.n = 0
        self._w = self._t = self._y = self._x = self._xx = self._xt = 0.0

    def record(self, tokens_fed: int, tokens_yielded: int, seconds: float) -> None:
        d = self.decay
        x = float(tokens_fed)
        self.n += 1
        self._w = d * self._w + 1.0
        self._x = d * self._x + x
        self._t = d * self._t + seconds
        self._y = d * self._y + tokens_yielded
        self._xx = d * self._xx + x * x
        self._xt = d * self._xt + x * seconds

    def per_token(self) -> float | None:
        """Fitted seconds per fed token ``b``, or None while it cannot be told from fixed cost."""
        if self.n < self.warmup or self._x <= 0:
            return None
        mx, mt = self._x / self._w, self._t / self._w
        var = self._xx / self._w - mx * mx
        if var <= 1e-6 * mx * mx:
            return None
        slope = (self._xt / self._w - mx * mt) / var
        return min(max(slope, 0.0), mt / mx)  # between free and "all of it is per token"

    def threshold(self) -> float:
        """Least acceptance probability that pays for a draft token's verification."""
        b = self.per_token()
        if b is None or self._t <= 0:
            return 0.0
        return b * self._y / self._t


class DraftGate:
    """Whether this step drafts at all: the measured seconds per generated token of decode steps
    with drafts against steps without, kept apart by how many sequences the step decodes (powers
    of two), since that is what decides between a latency-bound and a compute-bound forward.

    Each bucket starts by alternating the two modes for ``warmup`` steps each, then runs the
    faster one and tries the other every ``explore_every``-th step, so it follows a workload whose
    balance shifts. What it measures is everything drafting adds (proposals, the wider forward,
    verification in Python), which a per-token cost fit cannot see. Drafting is lossless, so the
    choice changes only the time a step takes, never a token.
    """

    def __init__(self, warmup: int = 3, explore_every: int = 16, decay: float = 0.8) -> None:
        self.warmup = warmup
        self.explore_every = explore_every
        self.decay = decay
        self._stats: dict[tuple[int, bool], list[float]] = {}  # (bucket, drafted) -> [steps, seconds, tokens]
        self._steps: dict[int, int] = {}

    @staticmethod
    def bucket(n_seqs: int) -> int:
        return max(1, n_seqs).bit_length()

    def per_token(self, bucket: int, drafted: bool) -> float | None:
        """Smoothed seconds per generated token in ``bucket`` with or without drafts, None before
        any step of that kind."""
        stat = self._stats.get((bucket, drafted))
        if stat is None or stat[2] <= 0:
            return None
        return stat[1] / stat[2]

    def choose(self, n_seqs: int) -> bool:
        """Draft this step, which decodes ``n_seqs`` sequences?"""
        b = self.bucket(n_seqs)
        step = self._steps.get(b, 0)
        self._steps[b] = step + 1
        counts = [self._stats.get((b, mode), [0.0])[0] for mode in (False, True)]
        if min(counts) < self.warmup:
            return counts[True] <= counts[False]
        on, off = self.per_token(b, True), self.per_token(b, False)
        better = on is not None and off is not None and on < off
        return (not better) if step % self.explore_every == 0 else better

    def record(self, n_seqs: int, drafted: bool, seconds: float, tokens: int) -> None:
        """One decode step's wall time and the tokens it generated."""
        stat = self._stats.setdefault((self.bucket(n_seqs), drafted), [0.0, 0.0, 0.0])
        d = self.decay if stat[0] >= 1 else 0.0
        stat[0] += 1
        stat[1] = d * stat[1] + seconds
        stat[2] = d * stat[2] + tokens
