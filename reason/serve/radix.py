"""A radix tree over token-id sequences: longest stored prefix of a sequence in time proportional to it.

Each edge holds a run of token ids; a node's children are keyed by their edge's first id, so a
lookup costs one dict probe and one slice comparison per edge walked, whatever else is stored.
:class:`~reason.serve.tree_index.PromptIndex` keeps one over the roots of the served trees and one
per tree node over that node's children.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class _Edge:
    __slots__ = ("kids", "run", "value")

    def __init__(self, run: tuple[int, ...], value: Any = None) -> None:
        self.run = run
        self.kids: dict[int, _Edge] = {}
        self.value = value


def _common(a: tuple[int, ...], b: Sequence[int], start: int) -> int:
    """How many leading ids of ``a`` equal ``b[start:]``'s."""
    n = min(len(a), len(b) - start)
    if tuple(b[start : start + n]) == a[:n]:
        return n
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


class TokenRadix:
    """Maps token-id sequences to values (``None`` is not a value); see the module docstring."""

    def __init__(self) -> None:
        self._top = _Edge(())
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def longest(self, ids: Sequence[int], start: int = 0) -> tuple[Any, int]:
        """The value of the longest stored key that ``ids[start:]`` begins with, and where that key
        ends in ``ids``; ``(None, start)`` when none does. ``ids`` should be a tuple (slices of it
        are compared with the stored runs)."""
        node, at, best = self._top, start, (None, start)
        while at < len(ids):
            kid = node.kids.get(ids[at])
            if kid is None:
                break
            end = at + len(kid.run)
            if end > len(ids) or ids[at:end] != kid.run:
                break
            node, at = kid, end
            if node.value is not None:
                best = (node.value, at)
        return best

    def insert(self, key: Sequence[int], value: Any) -> Any:
        """Store ``value`` under ``key`` unless a value is stored there already; returns the value
        stored under ``key`` afterwards (the older one wins)."""
        key = tuple(key)
        node, at = self._top, 0
        while True:
            if at == len(key):
                if node.value is None and node is not self._top:
                    node.value = value
                    self._size += 1
                return node.value
            kid = node.kids.get(key[at])
            if kid is None:
                node.kids[key[at]] = _Edge(key[at:], value)
                self._size += 1
                return value
            same = _common(kid.run, key, at)
            if same < len(kid.run):  # split the edge where the key leaves it
                mid = _Edge(kid.run[:same])
                kid.run = kid.run[same:]
                mid.kids[kid.run[0]] = kid
                node.kids[key[at]] = mid
                kid = mid
            node, at = kid, at + same

    def remove(self, key: Sequence[int], value: Any) -> bool:
        """Drop ``key`` if ``value`` is what it holds (compared by identity); True when dropped."""
        key = tuple(key)
        path: list[_Edge] = [self._top]
        at = 0
        while at < len(key):
            kid = path[-1].kids.get(key[at])
            if kid is None or key[at : at + len(kid.run)] != kid.run:
                return False
            path.append(kid)
            at += len(kid.run)
        node = path[-1]
        if node is self._top or node.value is not value:
            return False
        node.value = None
        self._size -= 1
        while len(path) > 1:  # prune empty leaves, then fold a lone child into its parent edge
            node, parent = path.pop(), path[-1]
            if node.value is None and not node.kids:
                del parent.kids[node.run[0]]
                continue
            if node.value is None and len(node.kids) == 1:
                (only,) = node.kids.values()
                only.run = node.run + only.run
                parent.kids[node.run[0]] = only
            break
        return True
