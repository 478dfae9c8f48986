"""The drafter interface: propose a small token tree to verify in one forward.

A draft is a tree of tokens that would follow a sequence: ``tokens[i]`` with ``parents[i]`` the
index of its parent in the draft, or ``-1`` when it directly follows the sequence's last token.
Parents come before children. The engine feeds the sequence's last token plus the draft under a
tree-shaped mask and keeps the longest path that agrees with the tokens the model itself picks, so
a draft can only change how many forwards a sequence takes, never its tokens.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from reason.core.tree import Node, Tree


@dataclass
class Draft:
    """A token tree (see the module docstring)."""

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, token: int, parent: int) -> int:
        """Append a node; returns its index."""
        self.tokens.append(int(token))
        self.parents.append(parent)
        return len(self.tokens) - 1

    def depths(self) -> list[int]:
        """Depth of each node (1 for children of the sequence's last token)."""
        out: list[int] = []
        for p in self.parents:
            out.append(1 if p < 0 else out[p] + 1)
        return out

    def children(self) -> dict[int, dict[int, int]]:
        """``{parent index: {token: child index}}`` (parent -1 is the sequence's last token)."""
        out: dict[int, dict[int, int]] = {}
        for i, (t, p) in enumerate(zip(self.tokens, self.parents)):
            out.setdefault(p, {}).setdefault(t, i)
        return out


@dataclass
class DraftQuery:
    """What a drafter may look at for one sequence: its problem's tree, the node being expanded, the
    token ids from the prompt to that node, the sequence's own new tokens, and its siblings' (the
    other sequences of the same expansion, still being decoded)."""

    tree: Tree
    node: Node
    path_ids: Sequence[int]
    generated: Sequence[int]
    key: object  # identifies the sequence across steps
    siblings: Sequence[tuple[object, Sequence[int]]] = ()

    def context(self, n: int) -> list[int]:
        """The last ``n`` tokens of the sequence (path and generated)."""
        gen = list(self.generated[-n:])
        if len(gen) < n:
            gen = list(self.path_ids[len(self.path_ids) - (n - len(gen)):]) + gen
        return gen


class Drafter(ABC):
    """Proposes draft token trees; may learn from the logits of every forward."""

    name = "drafter"
    context_size = 16  # how many trailing tokens of a sequence ``observe`` is given

    @abstractmethod
    def propose(self, query: DraftQuery, budget: int) -> Draft:
        """A draft of at most ``budget`` tokens for ``query``'s sequence."""

    def observe(self, rows: Sequence[tuple[list[int], Draft]], logits: torch.Tensor) -> None:
        """Called after each verification forward with, per verified sequence, its last
        ``context_size`` tokens and the draft fed after them, and the logits ``[n, vocab]`` of every
        fed position (each sequence's last token, then its draft nodes, sequence after sequence)."""

    def forget(self, key: object) -> None:
        """The sequence ``key`` is finished (its tokens now live in the tree, if anywhere)."""

    def memory_bytes(self) -> int:
        """Bytes of state the drafter holds."""
        return 0


NextTokens = Callable[[list[int]], Sequence[tuple[int, float]]]


def best_first(context: list[int], next_tokens: NextTokens, budget: int) -> Draft:
    """Grow a draft of at most ``budget`` nodes after ``context``, best score first.

    ``next_tokens(tokens)`` gives the ``(token, weight)`` candidates after ``tokens`` (context plus a
    draft path); a node's score is the product of the weights along its path. Ties go to the
    earlier-found node, so the result is deterministic.
    """
    draft = Draft()
    heap: list[tuple[float, int, int, int, list[int]]] = []
    order = 0

    def push(parent: int, path: list[int], score: float) -> None:
        nonlocal order
        for token, w in next_tokens(context + path):
            heapq.heappush(heap, (-score * w, order, parent, token, path))
            order += 1

    push(-1, [], 1.0)
    seen: set[tuple[int, int]] = set()
    while heap and len(draft) < budget:
        neg, _, parent, token, path = heapq.heappop(heap)
        if (parent, token) in seen:
            continue
        seen.add((parent, token))
        node = draft.add(token, parent)
        if len(draft) < budget:
            push(node, path + [token], -neg)
    return draft
