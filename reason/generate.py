"""``reason.generate``: sample ``n`` completions of one prompt (the library twin of ``reason generate``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from reason.budget import Ledger
from reason.engine.base import Engine, Sampling, Stop


class Sample(BaseModel):
    """One completion: its text, token ids, per-token logprobs and why it ended."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str | None


class GenerateResult(BaseModel):
    """The completions of one :func:`generate` call and the work they took."""

    samples: list[Sample]
    ledger: Ledger


def generate(
    engine: Engine,
    prompt: str | Sequence[dict[str, str]] | Sequence[int],
    *,
    n: int = 1,
    sampling: Sampling | None = None,
    stop: Stop | None = None,
) -> GenerateResult:
    """Sample ``n`` completions of ``prompt``, all batched in one expansion of a fresh tree."""
    started = time.perf_counter()
    tree = engine.new_tree(prompt)
    children = engine.expand(tree, tree.root, n, stop or Stop(), sampling or Sampling())
    samples = [Sample(text=c.text, token_ids=c.token_ids, logprobs=c.logprobs, finish_reason=c.finish_reason) for c in children]
    ledger = tree.ledger.model_copy()
    ledger.wall_seconds = time.perf_counter() - started
    release = getattr(engine, "release", None)
    if release is not None:
        release(tree)
    return GenerateResult(samples=samples, ledger=ledger)

