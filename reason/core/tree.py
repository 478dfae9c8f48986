"""The shared tree of partial generations.

A :class:`Tree` holds one problem's search: the root node holds the prompt's token ids, every other
node holds only the tokens it appended to its parent's path. Token ids are the truth (engines cache
and reuse them exactly); text is derived and kept for reading and answer extraction.

Strategies, scorers and engines all speak in nodes. Engines that keep state per node (cached KV,
draft indexes) register a release hook so that :meth:`Tree.prune` frees it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import networkx as nx

from reason.core.errors import ReasonError
from reason.core.ledger import Ledger

_tree_ids = itertools.count()

FinishReason = Literal["eos", "stop", "segment", "length", "answer", "max_depth", "repetition"]
"""Why a node's generation stopped. Engines report ``eos`` (an end-of-sequence token), ``stop`` (a
stop string or stop token id), ``segment`` (a fixed-length segment is full) and ``length`` (a
token cap or the model's context); strategies mark the ends of paths they stop themselves with
``answer`` (a complete final answer is in the text), ``max_depth`` and ``repetition``."""

TREE_SCHEMA_VERSION = 1
"""The version of the tree JSON written by :meth:`Tree.to_dict` (docs/tree-schema.md); bumped when a
field changes meaning or goes away, not when an optional field is added."""

FINISH_REASONS: tuple[FinishReason, ...] = get_args(FinishReason)
ENDED: frozenset[FinishReason] = frozenset({"eos", "answer", "max_depth", "repetition"})
"""The finish reasons after which a path is never extended (see :attr:`Node.finished`)."""


@dataclass(eq=False)
class Node:
    """One node of a :class:`Tree`: the tokens it appended to its parent's path.

    ``logprobs[i]`` is the policy's log-probability (temperature 1, before any filtering) of
    ``token_ids[i]``; the root's are empty, and so are those of nodes from a server that reports
    only processed logprobs. ``sampling_logprobs[i]`` is the same token's
    log-probability under the distribution it was drawn from (penalties, ``min_tokens`` masks,
    temperature, min-p, top-k and top-p applied; 0 for a greedy pick), empty when the engine does not report it. ``count`` is the
    node's multiplicity: how many samples produced exactly this node (identical siblings are merged
    into one, see :meth:`Tree.merge`). ``finish_reason`` says why generation of this node
    stopped (a :data:`FinishReason`); ``None`` for the root and for nodes made by hand; ask
    :attr:`finished` whether the path ends here. ``scores`` holds scorer outputs by scorer name and
    ``extra`` holds small strategy state; both are saved with the tree.
    """

    id: int
    token_ids: list[int]
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)
    children: list[Node] = field(default_factory=list, repr=False)
    depth: int = 0
    finish_reason: FinishReason | None = None
    scores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    sampling_logprobs: list[float] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        """True for the prompt node."""
        return self.parent is None

    @property
    def is_leaf(self) -> bool:
        """True when the node has no children."""
        return not self.children

    @property
    def finished(self) -> bool:
        """True when the path ends here for good: the model ended it (EOS), or a strategy marked it
        terminal (``answer``, ``max_depth``, ``repetition``). A node that stopped at a step
        delimiter, a segment's end or a token cap may be extended further."""
        return self.finish_reason in ENDED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the parent is given by id."""
        return {
            "id": self.id,
            "parent": None if self.parent is None else self.parent.id,
            "token_ids": list(self.token_ids),
            "text": self.text,
            "logprobs": list(self.logprobs),
            "sampling_logprobs": list(self.sampling_logprobs),
            "count": self.count,
            "depth": self.depth,
            "finish_reason": self.finish_reason,
            "scores": dict(self.scores),
            "extra": dict(self.extra),
        }


class Tree:
    """One problem's tree of partial generations, rooted at the prompt.

    ``ledger`` counts the work spent growing and scoring this tree. ``meta`` holds free-form
    problem information (id, question, reference answer) that is saved with the tree.
    """

    def __init__(
        self,
        prompt_ids: list[int],
        prompt_text: str = "",
        *,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if not prompt_ids:
            raise ReasonError("prompt", "is empty", "give at least one token of prompt")
        self.uid = next(_tree_ids)
        self.meta: dict[str, Any] = dict(meta or {})
        self.ledger = Ledger()
        self._ids = itertools.count()
        self._nodes: dict[int, Node] = {}
        self._release_hooks: list[Callable[[Node], None]] = []
        self.root = self._make(None, list(prompt_ids), prompt_text, [], None)
        self.ledger.prompt_tokens += len(prompt_ids)

    # -- building -----------------------------------------------------------------------------

    def _make(
        self,
        parent: Node | None,
        token_ids: list[int],
        text: str,
        logprobs: list[float],
        finish_reason: FinishReason | None,
        node_id: int | None = None,
        sampling_logprobs: list[float] | None = None,
    ) -> Node:
        nid = next(self._ids) if node_id is None else node_id
        node = Node(
            id=nid,
            token_ids=token_ids,
            text=text,
            logprobs=logprobs,
            parent=parent,
            depth=0 if parent is None else parent.depth + 1,
            finish_reason=finish_reason,
            sampling_logprobs=list(sampling_logprobs or []),
        )
        if nid in self._nodes:
            raise ReasonError("node_id", f"{nid} is taken", "reserve ids with reserve_ids()")
        self._nodes[nid] = node
        if parent is not None:
            siblings = parent.children
            at = len(siblings)
            while at and siblings[at - 1].id > nid:
                at -= 1
            siblings.insert(at, node)
        self.ledger.unique_tree_tokens += len(token_ids)
        return node

    def add_child(
        self,
        parent: Node,
        token_ids: list[int],
        text: str = "",
        logprobs: list[float] | None = None,
        finish_reason: FinishReason | None = None,
        node_id: int | None = None,
        sampling_logprobs: list[float] | None = None,
    ) -> Node:
        """Append a child of ``parent`` holding ``token_ids`` (engines call this; so may strategies
        that force text). ``node_id`` must come from :meth:`reserve_ids` when given. Identical
        siblings are allowed here; :meth:`merge` folds them together."""
        if self._nodes.get(parent.id) is not parent:
            raise ReasonError("parent", "is not a live node of this tree", "expand a node of this tree")
        if not token_ids:
            raise ReasonError("token_ids", "is empty", "a child must append at least one token")
        if logprobs is not None and len(logprobs) != len(token_ids):
            raise ReasonError("logprobs", "length differs from token_ids", "give one logprob per token")
        if sampling_logprobs and len(sampling_logprobs) != len(token_ids):
            raise ReasonError("sampling_logprobs", "length differs from token_ids", "give one logprob per token")
        return self._make(parent, list(token_ids), text, list(logprobs or []), finish_reason, node_id,
                          sampling_logprobs)

    def merge(self, nodes: Sequence[Node], key: Callable[[Node], Hashable] | None = None) -> list[Node]:
        """Fold each of ``nodes`` into an older sibling holding the same state, if there is one.

        Two siblings hold the same state when their token ids are equal, or, with ``key``, when
        ``key(node)`` is equal (a domain's state key, e.g. text with whitespace normalised). The
        older sibling (lower id) survives: its :attr:`Node.count` grows by the newcomer's, and the
        newcomer is pruned (engines free its cached state). The ledger moves the newcomer's tokens
        from ``unique_tree_tokens`` to ``merged_tokens``; ``generated_tokens`` keeps counting them,
        since they were generated. Returns, for each of ``nodes`` in order, the node that now
        stands for it (itself or the survivor), so a request for ``n`` samples still reads as
        ``n`` entries."""
        states: dict[int, Hashable] = {}

        def state(node: Node) -> Hashable:
            if node.id not in states:
                states[node.id] = tuple(node.token_ids) if key is None else key(node)
            return states[node.id]

        out: dict[int, Node] = {}
        for node in sorted(dict.fromkeys(nodes), key=lambda n: n.id):
            out[node.id] = node
            if node not in self or node.parent is None:
                continue
            # Children are kept in id order, so the first match is the oldest.
            survivor = next(sib for sib in node.parent.children if sib is node or state(sib) == state(node))
            if survivor is node:
                continue
            survivor.count += node.count
            tokens = sum(len(n.token_ids) for n in self._subtree(node))
            self.prune(node)
            self.ledger.unique_tree_tokens -= tokens
            self.ledger.merged_tokens += tokens
            out[node.id] = survivor
        return [out[n.id] for n in nodes]

    def _subtree(self, node: Node) -> list[Node]:
        out, stack = [], [node]
        while stack:
            cur = stack.pop()
            out.append(cur)
            stack.extend(cur.children)
        return out

    def reserve_ids(self, n: int) -> list[int]:
        """``n`` fresh node ids. Engines reserve ids when a request is submitted, so ids follow
        submission order, not the order in which requests happen to finish."""
        return [next(self._ids) for _ in range(n)]

    # -- access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        """Live nodes in id order (parents before children)."""
        return iter([self._nodes[i] for i in sorted(self._nodes)])

    def __contains__(self, node: object) -> bool:
        return isinstance(node, Node) and self._nodes.get(node.id) is node

    def node(self, node_id: int) -> Node:
        """The live node with id ``node_id``."""
        return self._nodes[node_id]

    def path(self, node: Node) -> list[Node]:
        """The nodes from the root down to ``node``, both included."""
        out = []
        cur: Node | None = node
        while cur is not None:
            out.append(cur)
            cur = cur.parent
        out.reverse()
        return out

    def prefix_ids(self, node: Node) -> list[int]:
        """All token ids from the root's first token to ``node``'s last."""
        return [t for n in self.path(node) for t in n.token_ids]

    def text(self, node: Node, include_prompt: bool = False) -> str:
        """The text of the path to ``node``; without the prompt unless asked."""
        path = self.path(node)
        if not include_prompt:
            path = path[1:]
        return "".join(n.text for n in path)

    def steps(self, node: Node) -> list[str]:
        """The texts of the nodes below the root on the path to ``node``, one per node."""
        return [n.text for n in self.path(node)[1:]]

    def leaves(self) -> list[Node]:
        """Every live node without children, in creation order."""
        return [n for n in self if not n.children]

    # -- pruning ------------------------------------------------------------------------------

    def add_release_hook(self, hook: Callable[[Node], None]) -> None:
        """Call ``hook(node)`` for every node removed by :meth:`prune` (engines free cached state)."""
        if hook not in self._release_hooks:
            self._release_hooks.append(hook)

    def prune(self, node: Node) -> int:
        """Remove ``node`` and its subtree; returns how many nodes went. The root cannot be pruned."""
        if node.parent is None:
            raise ReasonError("node", "is the root", "prune a child instead")
        if node not in self:
            return 0
        node.parent.children.remove(node)
        removed = 0
        stack = [node]
        while stack:
            cur = stack.pop()
            stack.extend(cur.children)
            del self._nodes[cur.id]
            for hook in self._release_hooks:
                hook(cur)
            removed += 1
        return removed

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the schema version, nodes in creation order (parents before children),
        meta and ledger (docs/tree-schema.md)."""
        return {
            "version": TREE_SCHEMA_VERSION,
            "meta": self.meta,
            "ledger": self.ledger.model_dump(),
            "nodes": [n.to_dict() for n in self],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The tree as a JSON string (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        """Rebuild a tree saved by :meth:`to_dict`; node ids, scores and the ledger are kept. A file
        without ``version`` is read as version 1; a newer version than this code knows is refused."""
        version = data.get("version", 1)
        if not isinstance(version, int) or not 1 <= version <= TREE_SCHEMA_VERSION:
            raise ReasonError("version", f"tree schema version {version!r} is not one this reason reads "
                              f"(1 to {TREE_SCHEMA_VERSION})", "upgrade reason, or save the tree with this version")
        nodes = sorted(data["nodes"], key=lambda n: n["id"])
        root = next(n for n in nodes if n["parent"] is None)
        tree = cls(root["token_ids"], root["text"], meta=data.get("meta"))
        tree._nodes.clear()
        tree._ids = itertools.count()
        by_id: dict[int, Node] = {}
        for rec in nodes:
            parent = None if rec["parent"] is None else by_id[rec["parent"]]
            node = tree._make(parent, rec["token_ids"], rec["text"], rec["logprobs"], rec["finish_reason"],
                              node_id=rec["id"], sampling_logprobs=rec.get("sampling_logprobs"))
            node.count = int(rec.get("count", 1))
            node.scores = dict(rec.get("scores", {}))
            node.extra = dict(rec.get("extra", {}))
            by_id[node.id] = node
        tree.root = by_id[root["id"]]
        tree._ids = itertools.count(max(by_id) + 1)
        tree.ledger = Ledger.model_validate(data.get("ledger", {}))
        return tree

    @classmethod
    def from_json(cls, text: str) -> Tree:
        """Rebuild a tree from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def to_networkx(self) -> nx.DiGraph:
        """A directed graph (parent -> child) whose node attributes are the nodes' fields."""
        graph = nx.DiGraph()
        for node in self:
            attrs = node.to_dict()
            attrs.pop("id")
            attrs.pop("parent")
            graph.add_node(node.id, **attrs)
            if node.parent is not None:
                graph.add_edge(node.parent.id, node.id)
        return graph
