"""Search budgets: the same meaning for every strategy."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from reason.core.tree import Tree


class Budget(BaseModel):
    """``n`` full-solution equivalents, plus optional caps on generated tokens, PRM calls and wall
    time. A strategy stops when any cap is hit and still returns its best answer so far."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(16, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_prm_calls: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)

    def exhausted(self, tree: Tree, started: float) -> bool:
        """True once any cap is reached for ``tree`` (search started at ``started``, perf_counter)."""
        led = tree.ledger
        if self.max_tokens is not None and led.generated_tokens >= self.max_tokens:
            return True
        if self.max_prm_calls is not None and led.prm_calls >= self.max_prm_calls:
            return True
        return self.max_seconds is not None and time.perf_counter() - started >= self.max_seconds
