"""The combined drafter: a deep spine from suffix matches, wide branches from recycled candidates.

Suffix matches in the problem's tree give whole continuations that the search already produced;
where the match is long they are reliable, so their tokens rank first at every position they cover
and the best of them forms the spine. The recycled tables then offer alternatives at every node
(beside the spine tokens) and continue past the end of the matches. The tree is grown best-first
(see :func:`reason.core.draft.base.best_first`): a long reliable match yields a deep narrow spine, an
uncertain position a wide fan.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reason.core.draft.base import Draft, Drafter, DraftQuery, best_first
from reason.core.draft.recycle import RecyclingDrafter
from reason.core.draft.suffix import SuffixDrafter, continuation_trie, ranked_children


class SpineDrafter(Drafter):
    """Suffix spine plus recycled branches (see the module docstring).

    ``reliable``: the match length from which a suffix continuation is trusted (weight
    ``strong`` instead of ``weak`` for its tokens).
    """

    name = "spine"

    def __init__(self, vocab_size: int, suffix: SuffixDrafter | None = None, recycle: RecyclingDrafter | None = None,
                 reliable: int = 4, strong: float = 0.95, weak: float = 0.5) -> None:
        self.suffix = suffix or SuffixDrafter()
        self.recycle = recycle or RecyclingDrafter(vocab_size)
        self.reliable = reliable
        self.strong = strong
        self.weak = weak

    def observe(self, rows: Sequence[tuple[list[int], Draft]], logits: torch.Tensor) -> None:
        self.recycle.observe(rows, logits)

    def forget(self, key: object) -> None:
        self.suffix.forget(key)

    def memory_bytes(self) -> int:
        return self.suffix.memory_bytes() + self.recycle.memory_bytes()

    def propose(self, query: DraftQuery, budget: int) -> Draft:
        if budget <= 0:
            return Draft()
        paths = self.suffix.candidates(query, budget)
        trie = continuation_trie(paths)
        best = max((length for _, length in paths), default=0)
        context = query.context(max(self.recycle.orders))
        first = self.strong if best >= self.reliable else self.weak

        def next_tokens(tokens: list[int]) -> list[tuple[int, float]]:
            ranked = ranked_children(trie, tuple(tokens[len(context):]))
            out = [(t, first if r == 0 else self.weak * share / ranked[0][1]) for r, (t, share) in enumerate(ranked)]
            taken = {t for t, _ in ranked}
            rest = [t for t in self.recycle.row(tokens) if t not in taken]
            weights = self.recycle.rank_weights[len(out) : self.recycle.width] if out else self.recycle.rank_weights[: self.recycle.width]
            return out + list(zip(rest, weights))

        return best_first(context, next_tokens, budget)
