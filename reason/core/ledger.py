"""The compute ledger: one set of counters, per problem and summed per run.

The keys are the ones every engine, scorer and strategy reports, so numbers from different
strategies and backends compare directly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Ledger(BaseModel):
    """Counters of the work spent on one problem (or, summed, on a run).

    * ``prompt_tokens``: tokens of the prompts (each problem's root).
    * ``unique_tree_tokens``: tokens held by all nodes ever created, the prompt included, less those
      of nodes merged into an identical sibling.
    * ``merged_tokens``: generated tokens that repeated a state the tree already held (a sample
      identical to a sibling), folded into that sibling; they are in ``generated_tokens`` too.
    * ``prefill_tokens``: tokens fed to the policy that were neither just sampled nor drafted: the
      first prompt pass plus every recomputation of an evicted or uncached prefix.
    * ``generated_tokens``: tokens sampled into nodes.
    * ``forward_passes``: policy forward calls this problem took part in (for an engine's own
      ledger: forward calls made).
    * ``draft_proposed`` / ``draft_accepted``: speculative draft tokens verified / kept.
    * ``prm_calls``, ``prm_tokens``, ``value_calls``, ``verifier_calls``: scorer work (items scored).
    * ``prm_batches`` / ``value_batches``: scorer model calls this problem took part in; with many
      problems searched at once, their scorer calls share batches (:mod:`reason.core.context`).
    * ``wall_seconds``: elapsed time.

    With the whole tree cached, ``prefill_tokens == prompt_tokens``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    prompt_tokens: int = 0
    unique_tree_tokens: int = 0
    merged_tokens: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    prm_calls: int = 0
    prm_tokens: int = 0
    prm_batches: int = 0
    value_calls: int = 0
    value_batches: int = 0
    verifier_calls: int = 0
    wall_seconds: float = 0.0

    def add(self, other: Ledger) -> Ledger:
        """Add ``other``'s counters into this ledger in place and return it."""
        for key in type(self).model_fields:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        return self

    @classmethod
    def total(cls, ledgers: list[Ledger]) -> Ledger:
        """A new ledger holding the sum of ``ledgers``."""
        out = cls()
        for ledger in ledgers:
            out.add(ledger)
        return out

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per policy forward: above 1 only with batching or drafting."""
        return self.generated_tokens / self.forward_passes if self.forward_passes else 0.0
