"""Token Recycling: tables of the top-k next tokens the model last predicted after each context.

Every verification forward's logits update the tables: the position of each fed token (draft nodes
included, rejected or not) records the top ``k`` tokens its logits ranked after it. Order 1 is the
paper's table, one row per vocabulary token (``vocab x k`` int32: 4.8 MB for a 150k vocabulary at
k=8). Longer orders key a row on the last ``n`` tokens instead (by the hash of those tokens); each
keeps at most ``capacity`` contexts, dropping the least recently updated, so memory stays bounded
however long the run. A lookup takes the longest order that has seen the context and
backs off to shorter ones: the long orders remember what the model computed in a context (``23+20=``
is followed by ``43``), the unigram rows give formatting.

A draft is grown best-first: every candidate's score is the product of the rank weights along its
path (``rank_weights[r]`` for the r-th candidate of a row), and the ``budget`` best-scoring nodes form
the tree. With the default weights the top-1 chain goes deep and alternatives branch off near the
root, the anisotropic shape that suits confident models.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from reason.core.draft.base import Draft, Drafter, DraftQuery, best_first

DEFAULT_ORDERS = (1, 3, 6)
DEFAULT_RANK_WEIGHTS = (0.85, 0.25, 0.1, 0.05, 0.03, 0.02, 0.01, 0.01)

class RecyclingDrafter(Drafter):
    """Drafts from recycled candidate tables (see the module docstring).

    ``k``: candidates kept per row; ``orders``: context lengths with a table (1 is the per-token
    table); ``capacity``: most contexts kept by each longer order's table; ``rank_weights``: score factor of
    the r-th candidate of a row; ``width``: most candidates of a row tried at one draft node.
    """

    name = "recycle"

    def __init__(self, vocab_size: int, k: int = 8, orders: tuple[int, ...] = DEFAULT_ORDERS,
                 capacity: int = 1 << 14, rank_weights: tuple[float, ...] = DEFAULT_RANK_WEIGHTS,
                 width: int = 4) -> None:
        self.k = k
        self.orders = tuple(sorted(set(orders), reverse=True))
        self.rank_weights = rank_weights
        self.width = width
        self.unigram = np.full((vocab_size, k), -1, dtype=np.int32)
        self.capacity = capacity
        # Context tables: {context tuple hash: candidates}; insertion-ordered, so the oldest context
        # is the one dropped at capacity.
        self._ctx: dict[int, dict[int, list[int]]] = {n: {} for n in self.orders if n > 1}

    def memory_bytes(self) -> int:
        ctx = sum(sys.getsizeof(d) + sum(sys.getsizeof(r) + 28 * len(r) for r in d.values())
                  for d in self._ctx.values())
        return self.unigram.nbytes + ctx

    def row(self, context: Sequence[int]) -> list[int]:
        """The candidates recorded after ``context`` at the longest order that has seen it, best
        first (empty when none has)."""
        for n in self.orders:
            if len(context) < n:
                continue
            if n == 1:
                out = self.unigram[context[-1]].tolist()
                if out[-1] < 0:
                    out = [t for t in out if t >= 0]
                return out
            found = self._ctx[n].get(hash(tuple(context[-n:])))
            if found:
                return found
        return []

    def candidates(self, tokens: list[int]) -> list[tuple[int, float]]:
        """``row(tokens)`` with the rank weights, for :func:`best_first`."""
        return list(zip(self.row(tokens), self.rank_weights[: self.width]))

    def observe(self, rows: Sequence[tuple[list[int], Draft]], logits: torch.Tensor) -> None:
        if logits.numel() == 0:
            return
        top = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1).indices.to(torch.int32).cpu().numpy()
        if top.shape[1] < self.k:
            top = np.pad(top, ((0, 0), (0, self.k - top.shape[1])), constant_values=-1)
        paths: list[list[int]] = []
        for context, draft in rows:
            start = len(paths)
            paths.append(context)
            for t, p in zip(draft.tokens, draft.parents):
                paths.append((paths[start] if p < 0 else paths[start + p + 1]) + [t])
        last = [path[-1] for path in paths]
        self.unigram[np.asarray(last, dtype=np.int64)] = top
        if self._ctx:
            cands = top.tolist()
            for n, table in self._ctx.items():
                for path, row in zip(paths, cands):
                    if len(path) >= n:
                        key = hash(tuple(path[-n:]))
                        table.pop(key, None)  # re-inserting moves it to the young end
                        table[key] = row if row[-1] >= 0 else [t for t in row if t >= 0]
                while len(table) > self.capacity:
                    del table[next(iter(table))]

    def propose(self, query: DraftQuery, budget: int) -> Draft:
        if budget <= 0:
            return Draft()
        return best_first(query.context(max(self.orders)), self.candidates, budget)
