"""Does drafting pay here? Measured, not assumed.

Two measurements steer drafting while the engine runs:

* :class:`ForwardCost` fits a decode forward's time as ``a + b * tokens fed`` (exponentially
  weighted least squares) and tracks the tokens it yields per second; their product,
  :meth:`ForwardCost.threshold`, is how many accepted tokens one fed draft token must bring. It is
  near zero where a forward costs the same for one token or twenty (a GPU at small batch) and near
  one where the forward is compute-bound (a CPU with many sequences); draft sizes follow it.
* :class:`DraftSwitch` settles what a cost model cannot see (the drafter's own Python work, padding
  every row of a forward to the longest draft): it runs windows of steps with drafting on and off,
  keeps the throughput (generated tokens per second of step time) of each, and drafts in the windows
  after only while drafting is ahead, trying the other setting every few windows in case the
  workload changed.
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
        """Accepted tokens that pay for one fed draft token (0 until measurable)."""
        b = self.per_token()
        if b is None or self._t <= 0:
            return 0.0
        return b * self._y / self._t


class DraftSwitch:
    """Drafting on or off for the next ``window`` decode steps, by measured throughput (see the
    module docstring). Every ``explore``-th window runs the setting that is behind."""

    def __init__(self, window: int = 8, explore: int = 6, decay: float = 0.7) -> None:
        self.window = window
        self.explore = explore
        self.decay = decay
        self.on = True
        self.rates: dict[bool, float | None] = {True: None, False: None}  # tokens per second
        self.windows = 0
        self._steps = 0
        self._tokens = 0
        self._seconds = 0.0

    def record(self, tokens: int, seconds: float) -> None:
        """One decode step of the current setting: tokens generated and its wall time."""
        self._steps += 1
        self._tokens += tokens
        self._seconds += seconds
        if self._steps < self.window:
            return
        rate = self._tokens / max(self._seconds, 1e-9)
        old = self.rates[self.on]
        self.rates[self.on] = rate if old is None else self.decay * old + (1 - self.decay) * rate
        self._steps, self._tokens, self._seconds = 0, 0, 0.0
        self.windows += 1
        on, off = self.rates[True], self.rates[False]
        if off is None:
            self.on = False
            return
        ahead = on is not None and on > off
        self.on = (not ahead) if self.windows % self.explore == 0 else ahead
