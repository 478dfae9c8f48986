"""Where a served prompt sits in the server's trees, so its cached prefix is reused.

Clients such as the ``openai`` backend send each expansion as the token ids of the whole path
(prompt, then every node down to the one expanded). The server keeps the trees its answers grew:
a prompt is walked down the tree whose root it starts with, node by node while whole nodes match,
and only the unmatched rest becomes a new node. The engine then computes KV for that rest alone:
every earlier node is cached (or recomputed after eviction, never lost).

Placing a prompt costs time in proportion to the prompt, not to what the server holds: the roots
are kept in a radix tree over token ids (:class:`~reason.serve.radix.TokenRadix`), and so are each
node's children, so finding the tree and every next node is a few dict probes and one slice
comparison per node matched, however many trees, siblings or tokens are held.

Trees are dropped least recently used first once more than ``max_tokens`` tokens are held, except
trees with requests in flight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from reason.core.engine.base import Engine
from reason.core.errors import ReasonError
from reason.core.tree import Node, Tree
from reason.serve.radix import TokenRadix


class PromptIndex:
    """Maps token-id prompts to ``(tree, node)`` (see the module docstring)."""

    def __init__(self, engine: Engine, max_tokens: int = 2_000_000) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise ReasonError("max-tree-tokens", f"must be a whole number of tokens, 0 or more (got {max_tokens!r})",
                              "pass e.g. --max-tree-tokens 2000000 (0 keeps no served tree)")
        self.engine = engine
        self.max_tokens = max_tokens
        self._trees: OrderedDict[int, Tree] = OrderedDict()  # by uid, least recently used first
        self._roots = TokenRadix()  # root token ids -> tree
        self._children: dict[int, dict[int, TokenRadix]] = {}  # tree uid -> node id -> its children's ids -> child
        self._tree_tokens: dict[int, int] = {}  # tree uid -> tokens it holds
        self._busy: dict[int, int] = {}  # tree uid -> requests in flight
        self.tokens = 0
        self.reused_tokens = 0  # prompt tokens found in the trees already

    def locate(self, ids: list[int]) -> tuple[Tree, Node]:
        """The node whose path is exactly ``ids``, made if needed; marks its tree busy."""
        tree, node, _ = self.place(ids)
        return tree, node

    def place(self, ids: Sequence[int]) -> tuple[Tree, Node, int]:
        """:meth:`locate`, plus how many of ``ids`` were found in the trees already."""
        key = tuple(ids)
        tree, at = self._roots.longest(key)
        if tree is None:
            tree = self.engine.new_tree(list(key))
            self._roots.insert(key, tree)
            self._trees[tree.uid] = tree
            self._children[tree.uid] = {}
            self._tree_tokens[tree.uid] = len(key)
            self.tokens += len(key)
            node, at = tree.root, len(key)
            reused = 0
        else:
            self._trees.move_to_end(tree.uid)
            kids = self._children[tree.uid]
            node = tree.root
            while at < len(key):
                radix = kids.get(node.id)
                child, end = radix.longest(key, at) if radix is not None else (None, at)
                if child is None:
                    break
                if child not in tree:  # pruned since it was indexed
                    radix.remove(child.token_ids, child)
                    break
                node, at = child, end
            reused = at
            if at < len(key):
                rest = list(key[at:])
                node = tree.add_child(node, rest, self.engine.decode(rest))
                self._index(tree, node)
                self._tree_tokens[tree.uid] += len(rest)
                self.tokens += len(rest)
        self.reused_tokens += reused
        self._busy[tree.uid] = self._busy.get(tree.uid, 0) + 1
        return tree, node, reused

    def _index(self, tree: Tree, child: Node) -> None:
        if child.parent is None or not child.token_ids:
            return
        kids = self._children.get(tree.uid)
        if kids is None:  # the tree was dropped meanwhile
            return
        radix = kids.get(child.parent.id)
        if radix is None:
            radix = kids[child.parent.id] = TokenRadix()
        radix.insert(child.token_ids, child)

    def done(self, tree: Tree, new_tokens: int, children: Sequence[Node] = ()) -> None:
        """A request on ``tree`` finished, adding ``children`` holding ``new_tokens`` tokens to it
        (children are indexed, so a later prompt through them finds them)."""
        for child in children:
            self._index(tree, child)
        self.tokens += new_tokens
        if tree.uid in self._tree_tokens:
            self._tree_tokens[tree.uid] += new_tokens
        self._busy[tree.uid] -= 1
        if not self._busy[tree.uid]:
            del self._busy[tree.uid]
        self._shrink()

    def _shrink(self) -> None:
        if self.tokens <= self.max_tokens:
            return
        over = self.tokens - self.max_tokens
        victims = []
        for uid in self._trees:  # least recently used first; stops as soon as enough is found
            if over <= 0:
                break
            if uid not in self._busy:
                victims.append(uid)
                over -= self._tree_tokens[uid]
        for uid in victims:
            tree = self._trees.pop(uid)
            self._roots.remove(tree.root.token_ids, tree)
            del self._children[uid]
            self.tokens -= self._tree_tokens.pop(uid)
            self.engine.release(tree)

    def __len__(self) -> int:
        return len(self._trees)
