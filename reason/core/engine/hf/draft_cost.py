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
