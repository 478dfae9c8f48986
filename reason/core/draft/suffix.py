"""Suffix matching over a problem's whole search tree (and its prompt and in-flight siblings).

Every token of the tree is indexed by the bigram it ends, incrementally as nodes appear. To draft
for a sequence, the drafter looks up its last two tokens, extends each occurrence backwards to
measure how long the match is, and follows the best (longest, then most recent) occurrences
forwards: along the rest of their node and on into that node's children, so the draft branches
where the search tree branched. Continuations are merged into a token trie weighted by match length
and the heaviest ``budget`` nodes form the draft. Sequences still being decoded
are indexed too, so a sibling that is ahead drafts for one that is behind. Every finished sequence
also goes into a run-wide index (:class:`RunIndex`, bounded), so later problems, trees and RL steps
draft from what earlier ones generated.
"""

from __future__ import annotations

import itertools
import weakref
from collections import deque
from itertools import count

from reason.core.draft.base import Draft, Drafter, DraftQuery, best_first
from reason.core.tree import Node, Tree


class _Doc:
    """A run of tokens: a tree node's own tokens, or an in-flight sequence's, after ``parent``'s."""

    __slots__ = ("node", "order", "parent", "tokens")

    def __init__(self, parent: _Doc | None, node: Node | None, order: int) -> None:
        self.tokens: list[int] = []
        self.parent = parent
        self.node = node
        self.order = order


class _TreeIndex:
    def __init__(self) -> None:
        self.by_node: dict[int, _Doc] = {}
        self.by_seq: dict[object, _Doc] = {}
        self.grams: dict[tuple[int, int], list[tuple[_Doc, int]]] = {}
        self.count = -1
        self.tokens = 0

    def extend(self, doc: _Doc, tokens: list[int] | tuple[int, ...]) -> None:
        start = len(doc.tokens)
        doc.tokens.extend(tokens)
        for i in range(start, len(doc.tokens)):
            prev = doc.tokens[i - 1] if i else (doc.parent.tokens[-1] if doc.parent and doc.parent.tokens else None)
            if prev is not None:
                self.grams.setdefault((prev, doc.tokens[i]), []).append((doc, i))
        self.tokens += len(doc.tokens) - start


class RunIndex:
    """Bigram index over the sequences every expansion of a run generated, across trees, problems
    and RL steps (SuffixDecoding's global index), bounded: past ``max_tokens`` indexed tokens the
    oldest sequences are dropped, so memory stays flat however long the engine lives."""

    def __init__(self, max_tokens: int = 200_000) -> None:
        self.max_tokens = max_tokens
        self.docs: deque[_Doc] = deque()
        self.grams: dict[tuple[int, int], deque[tuple[_Doc, int]]] = {}
        self.tokens = 0

    def add(self, tokens: list[int], order: int) -> None:
        """Index one finished sequence's tokens (``order``: its recency among all documents)."""
        if len(tokens) < 2 or self.max_tokens <= 0:
            return
        doc = _Doc(None, None, order)
        doc.tokens = tokens[-self.max_tokens :]
        for i in range(1, len(doc.tokens)):
            self.grams.setdefault((doc.tokens[i - 1], doc.tokens[i]), deque()).append((doc, i))
        self.docs.append(doc)
        self.tokens += len(doc.tokens)
        while self.tokens > self.max_tokens:
            self._drop(self.docs.popleft())

    def _drop(self, doc: _Doc) -> None:
        # Entries are appended in document order, so the oldest document's are at each front.
        for i in range(1, len(doc.tokens)):
            gram = (doc.tokens[i - 1], doc.tokens[i])
            entries = self.grams[gram]
            entries.popleft()
            if not entries:
                del self.grams[gram]
        self.tokens -= len(doc.tokens)


class SuffixDrafter(Drafter):
    """Drafts from matches in the problem's own tree and in what the run generated before (see the
    module docstring).

    ``max_match``: how far back a match is measured; ``occurrences``: how many matches are followed;
    ``branch``: how many children are followed where a matched node branches; ``scan``: how many of
    the most recent occurrences of a bigram are examined; ``run_tokens``: the bound of the run-wide
    index of finished sequences (:class:`RunIndex`; 0 for none).
    """

    name = "suffix"

    def __init__(self, max_match: int = 16, occurrences: int = 6, branch: int = 2, scan: int = 64,
                 run_tokens: int = 200_000) -> None:
        self.max_match = max_match
        self.occurrences = occurrences
        self.branch = branch
        self.scan = scan
        self._order = count()
        self._index: weakref.WeakKeyDictionary[Tree, _TreeIndex] = weakref.WeakKeyDictionary()
        self.run = RunIndex(run_tokens)

    # -- the index --------------------------------------------------------------------------------

    def _sync(self, tree: Tree) -> _TreeIndex:
        idx = self._index.get(tree)
        if idx is None:
            idx = self._index[tree] = _TreeIndex()
        if idx.count != len(tree):
            for node in tree:
                if node.id not in idx.by_node:
                    parent = idx.by_node.get(node.parent.id) if node.parent is not None else None
                    doc = idx.by_node[node.id] = _Doc(parent, node, next(self._order))
                    idx.extend(doc, node.token_ids)
            idx.count = len(tree)
        return idx

    def _seq_doc(self, idx: _TreeIndex, key: object, node: Node, tokens) -> _Doc:
        doc = idx.by_seq.get(key)
        if doc is None:
            doc = idx.by_seq[key] = _Doc(idx.by_node.get(node.id), None, next(self._order))
        if len(tokens) > len(doc.tokens):
            idx.extend(doc, list(tokens[len(doc.tokens):]))
        return doc

    def forget(self, key: object) -> None:
        for idx in self._index.values():
            doc = idx.by_seq.pop(key, None)
            if doc is not None:
                self.run.add(doc.tokens, next(self._order))
                doc.node = None
                doc.tokens = doc.tokens[:0]  # its occurrences now point at nothing

    def memory_bytes(self) -> int:
        # Per indexed token: one gram entry (a tuple in a list, ~72 bytes) and the token itself.
        return (sum(idx.tokens for idx in self._index.values()) + self.run.tokens) * 80

    # -- drafting -----------------------------------------------------------------------------------

    def _match_len(self, doc: _Doc, i: int, tail: list[int]) -> int:
        n, k = 0, len(tail) - 1
        d, j = doc, i
        while k >= 0 and d is not None:
            if j < 0:
                d = d.parent
                if d is None:
                    break
                j = len(d.tokens) - 1
                continue
            if d.tokens[j] != tail[k]:
                break
            n += 1
            k -= 1
            j -= 1
        return n

    def _continuations(self, doc: _Doc, i: int, depth: int, idx: _TreeIndex, tree: Tree):
        """Token paths that follow position ``i`` of ``doc``, branching into tree children."""
        head = doc.tokens[i + 1 : i + 1 + depth]
        room = depth - len(head)
        if room <= 0 or doc.node is None or doc.node not in tree or not doc.node.children:
            yield head
            return
        kids = [idx.by_node[c.id] for c in doc.node.children[-self.branch:] if c.id in idx.by_node]
        if not kids:
            yield head
            return
        for kid in reversed(kids):
            for rest in self._continuations(kid, -1, room, idx, tree):
                yield head + rest

    def candidates(self, query: DraftQuery, depth: int) -> list[tuple[list[int], int]]:
        """Continuation paths with their match lengths, best first."""
        idx = self._sync(query.tree)
        own = self._seq_doc(idx, query.key, query.node, query.generated)
        for key, tokens in query.siblings:
            self._seq_doc(idx, key, query.node, tokens)
        tail = query.context(self.max_match)
        if len(tail) < 2:
            return []
        gram = (tail[-2], tail[-1])
        scored = []
        for doc, i in _recent(idx.grams.get(gram, ()), self.scan):
            if doc is own and i == len(doc.tokens) - 1:
                continue
            if doc.node is not None and doc.node not in query.tree:
                continue
            if i + 1 >= len(doc.tokens) and (doc.node is None or not doc.node.children):
                continue  # nothing follows
            scored.append((self._match_len(doc, i, tail), 1, doc.order, i, doc))
        # The run's earlier sequences, ranked after this tree's own matches of the same length.
        for doc, i in _recent(self.run.grams.get(gram, ()), self.scan):
            if i + 1 < len(doc.tokens):
                scored.append((self._match_len(doc, i, tail), 0, doc.order, i, doc))
        scored.sort(key=lambda s: (-s[0], -s[1], -s[2], -s[3]))
        scored = [(length, order, i, doc) for length, _, order, i, doc in scored]
        out = []
        for length, _, i, doc in scored[: self.occurrences]:
            for path in self._continuations(doc, i, depth, idx, query.tree):
                if path:
                    out.append((path, length))
        return out

    def propose(self, query: DraftQuery, budget: int) -> Draft:
        if budget <= 0:
            return Draft()
        trie = continuation_trie(self.candidates(query, budget))
        context = query.context(1)
        return best_first(context, lambda tokens: ranked_children(trie, tuple(tokens[len(context):])), budget)


def _recent(entries, n: int) -> list:
    """The last ``n`` of a list or deque of occurrences."""
    if len(entries) <= n:
        return list(entries)
    return list(itertools.islice(entries, len(entries) - n, None))


Trie = dict[tuple[int, ...], dict[int, float]]


def continuation_trie(paths: list[tuple[list[int], int]]) -> Trie:
    """Merge weighted token paths into a trie: ``{path prefix: {next token: summed weight}}``."""
    trie: Trie = {}
    for path, weight in paths:
        for i, t in enumerate(path):
            kids = trie.setdefault(tuple(path[:i]), {})
            kids[t] = kids.get(t, 0.0) + weight
    return trie


def ranked_children(trie: Trie, prefix: tuple[int, ...]) -> list[tuple[int, float]]:
    """The tokens after ``prefix``, heaviest first, each with its share of the prefix's weight (so a
    node's product of shares along its path is its own weight over the total: best-first growth keeps
    the heaviest nodes)."""
    kids = trie.get(prefix, {})
    total = sum(kids.values())
    return [(t, kids[t] / total) for t in sorted(kids, key=lambda t: -kids[t])]
