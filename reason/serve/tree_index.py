"""Where a served prompt sits in the server's trees, so its cached prefix is reused.

Clients such as the ``openai`` backend send each expansion as the token ids of the whole path
(prompt, then every node down to the one expanded). The server keeps the trees its answers grew:
a prompt is walked down the tree whose root it starts with, child by child while whole nodes match,
and only the unmatched rest becomes a new node. The engine then computes KV for that rest alone:
every earlier node is cached (or recomputed after eviction, never lost).

Trees are dropped least recently used first once more than ``max_tokens`` tokens are held, except
trees with requests in flight.
"""

from __future__ import annotations

from collections import OrderedDict

from reason.core.engine.base import Engine
from reason.core.errors import ReasonError
from reason.core.tree import Node, Tree


class PromptIndex:
    """Maps token-id prompts to ``(tree, node)`` (see the module docstring)."""

    def __init__(self, engine: Engine, max_tokens: int = 2_000_000) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise ReasonError("max-tree-tokens", f"must be a whole number of tokens, 0 or more (got {max_tokens!r})",
                              "pass e.g. --max-tree-tokens 2000000 (0 keeps no served tree)")
        self.engine = engine
        self.max_tokens = max_tokens
        self._trees: OrderedDict[tuple[int, ...], Tree] = OrderedDict()
        self._root_lengths: dict[int, int] = {}  # root length -> number of trees with it
        self._busy: dict[int, int] = {}  # tree uid -> requests in flight
        self.tokens = 0
        self.reused_tokens = 0  # prompt tokens found in the trees already

    def locate(self, ids: list[int]) -> tuple[Tree, Node]:
        """The node whose path is exactly ``ids``, made if needed; marks its tree busy."""
        tree = None
        for length in sorted(self._root_lengths, reverse=True):
            if length <= len(ids):
                tree = self._trees.get(tuple(ids[:length]))
                if tree is not None:
                    break
        if tree is None:
            tree = self.engine.new_tree(ids)
            key = tuple(ids)
            self._trees[key] = tree
            self._root_lengths[len(key)] = self._root_lengths.get(len(key), 0) + 1
            self.tokens += len(key)
            node = tree.root
        else:
            self._trees.move_to_end(tuple(tree.root.token_ids))
            node, at = tree.root, len(tree.root.token_ids)
            self.reused_tokens += at
            while at < len(ids):
                child = next((c for c in node.children
                              if c.token_ids and ids[at : at + len(c.token_ids)] == c.token_ids), None)
                if child is None:
                    break
                node, at = child, at + len(child.token_ids)
                self.reused_tokens += len(child.token_ids)
            if at < len(ids):
                rest = ids[at:]
                node = tree.add_child(node, rest, self.engine.decode(rest))
                self.tokens += len(rest)
        self._busy[tree.uid] = self._busy.get(tree.uid, 0) + 1
        return tree, node

    def done(self, tree: Tree, new_tokens: int) -> None:
        """A request on ``tree`` finished, adding ``new_tokens`` to it."""
        self.tokens += new_tokens
        self._busy[tree.uid] -= 1
        if not self._busy[tree.uid]:
            del self._busy[tree.uid]
        self._shrink()

    def _shrink(self) -> None:
        for key in list(self._trees):
            if self.tokens <= self.max_tokens:
                return
            tree = self._trees[key]
            if tree.uid in self._busy:
                continue
            del self._trees[key]
            self._root_lengths[len(key)] -= 1
            if not self._root_lengths[len(key)]:
                del self._root_lengths[len(key)]
            self.tokens -= sum(len(n.token_ids) for n in tree)
            self.engine.release(tree)

    def __len__(self) -> int:
        return len(self._trees)
