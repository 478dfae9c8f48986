"""KV storage for the hf engine: a slot pool shared by every tree, and per-node ownership of slots.

Every token whose keys and values have been computed lives in one *slot* of :class:`KVPool` (one
row per layer of a ``[slots, kv_heads, head_dim]`` tensor). A node owns the slots of its own tokens
only; a sequence attends to its path by gathering the slots of every node on it, so siblings share
their parent's KV without copying and no live token is ever computed twice.

:class:`NodeStore` tracks which nodes hold slots, pins the paths that running requests need and
evicts the least recently used unpinned *cached leaves* (nodes none of whose children hold slots)
when the pool is over budget. Evicted tokens are recomputed on demand.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import torch

from reason.core.tree import Node

TRASH_SLOT = 0  # padding reads and writes go here; never handed out


class PoolFull(Exception):
    """Raised by :meth:`KVPool.alloc` when the budget leaves no free slot."""


class KVPool:
    """Fixed-shape KV storage for all layers, grown by doubling up to ``max_slots``."""

    def __init__(
        self,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        max_slots: int | None,
        initial_slots: int = 4096,
    ) -> None:
        self.n_layers, self.kv_heads, self.head_dim = n_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.max_slots = max_slots  # excluding the trash slot; None = unbounded
        size = 1 + (initial_slots if max_slots is None else min(initial_slots, max_slots))
        self.keys = [self._empty(size) for _ in range(n_layers)]
        self.values = [self._empty(size) for _ in range(n_layers)]
        self._free: list[int] = list(range(size - 1, 0, -1))

    def _empty(self, size: int) -> torch.Tensor:
        return torch.zeros(size, self.kv_heads, self.head_dim, dtype=self.dtype, device=self.device)

    @property
    def capacity(self) -> int:
        """Slots currently allocated in memory (excluding the trash slot)."""
        return self.keys[0].shape[0] - 1

    @property
    def limit(self) -> int | None:
        """The most slots this pool may ever hold."""
        return self.max_slots

    @property
    def n_free(self) -> int:
        """Slots that can be handed out without eviction (growth included)."""
        grow = (self.max_slots - self.capacity) if self.max_slots is not None else 1 << 40
        return len(self._free) + grow

    @property
    def n_used(self) -> int:
        """Slots handed out and not yet freed."""
        return self.capacity - len(self._free)

    def bytes_per_slot(self) -> int:
        """Bytes one token's KV takes over all layers."""
        elem = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.n_layers * self.kv_heads * self.head_dim * elem

    def _grow(self, need: int) -> None:
        old = self.capacity
        new = max(old * 2, old + need)
        if self.max_slots is not None:
            new = min(new, self.max_slots)
        if new <= old:
            return
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                grown = self._empty(new + 1)
                grown[: old + 1] = t
                store[i] = grown
        self._free.extend(range(new, old, -1))

    def alloc(self, n: int) -> list[int]:
        """``n`` free slots; raises :class:`PoolFull` when the budget cannot supply them."""
        if n > len(self._free):
            self._grow(n - len(self._free))
        if n > len(self._free):
            raise PoolFull(n)
        out = self._free[-n:] if n else []
        del self._free[len(self._free) - n :]
        return out[::-1]

    def free(self, slots: list[int]) -> None:
        """Return ``slots`` to the pool."""
        self._free.extend(slots)


class PoolCache:
    """The object handed to the model as ``past_key_values`` for one forward.

    Each attention layer calls :meth:`update` with the new tokens' keys and values: they are written
    to their slots, and the layer gets back the gathered keys and values of every slot its queries
    may attend to (``read_idx``, ``[batch, keys]``), in the order the 4-D mask describes.

    ``span``: the first slot when the batch is one row whose keys sit in consecutive slots, its new
    tokens last (one sequence decoded alone, as a fresh pool allocates it). Its keys and values are
    then a view of the pool and its new tokens one slice copy, instead of an index write and an
    index gather per layer.
    """

    def __init__(self, pool: KVPool, write_idx: torch.Tensor, read_idx: torch.Tensor, span: int | None = None) -> None:
        self.pool = pool
        self.write_idx = write_idx.reshape(-1)
        self.read_shape = read_idx.shape
        self.read_idx = read_idx.reshape(-1)
        self.span = span

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        b, h, q, d = key_states.shape
        out = []
        for store, new in ((self.pool.keys[layer_idx], key_states), (self.pool.values[layer_idx], value_states)):
            rows = new.transpose(1, 2).reshape(b * q, h, d)
            if self.span is not None:
                end = self.span + self.read_shape[1]
                store[end - q : end].copy_(rows)
                out.append(store[self.span : end].unsqueeze(0).transpose(1, 2))
                continue
            store.index_copy_(0, self.write_idx, rows.to(store.dtype))
            gathered = store.index_select(0, self.read_idx).view(b, self.read_shape[1], h, d)
            out.append(gathered.transpose(1, 2))
        return out[0], out[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    @property
    def is_compileable(self) -> bool:
        return False


@dataclass(eq=False)
class NodeKV:
    """What the engine keeps for one node: the slots of its first ``len(slots)`` tokens, the hidden
    state after its last token (when computed), and pins by running requests."""

    node: Node
    slots: list[int] = field(default_factory=list)
    head_hidden: torch.Tensor | None = None
    fed: int = 0  # how many leading tokens have ever been fed (for prefill accounting)
    sampled: bool = False  # made by the engine: its never-fed last token is not prefill
    pins: int = 0
    cached_children: int = 0
    last_use: int = 0
    dead: bool = False  # pruned from its tree while pinned

    @property
    def complete(self) -> bool:
        return len(self.slots) == len(self.node.token_ids)


class NodeStore:
    """Per-node KV bookkeeping: pins, LRU eviction of unpinned cached leaves, release on prune.

    Eviction scans the entries that hold slots, so when the pool is full it frees ``evict_slack``
    of the pool's limit beyond what the step asked for: one scan then serves many steps instead of
    every step of a full pool paying for a scan over everything cached (a long-lived server holds
    millions of tokens in tens of thousands of nodes).
    """

    EVICT_SLACK = 1 / 64

    def __init__(self, pool: KVPool, evict_slack: float = EVICT_SLACK) -> None:
        self.pool = pool
        self.evict_slack = evict_slack
        self._entries: dict[Node, NodeKV] = {}
        self._holding: set[NodeKV] = set()  # entries with slots: the only eviction candidates
        self._clock = itertools.count(1)
        self.evicted_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, node: Node) -> NodeKV:
        entry = self._entries.get(node)
        if entry is None:
            entry = self._entries[node] = NodeKV(node)
        return entry

    def peek(self, node: Node) -> NodeKV | None:
        return self._entries.get(node)

    def touch(self, entry: NodeKV) -> None:
        entry.last_use = next(self._clock)

    def pin(self, path: list[Node]) -> list[NodeKV]:
        entries = [self.get(n) for n in path]
        for e in entries:
            e.pins += 1
            self.touch(e)
        return entries

    def unpin(self, entries: list[NodeKV]) -> None:
        for e in entries:
            e.pins -= 1
            self.touch(e)
            if e.dead and e.pins == 0:
                self._drop(e)

    def set_slots(self, entry: NodeKV, slots: list[int]) -> None:
        """Record that ``entry``'s first ``len(slots)`` tokens now live in ``slots``."""
        had = bool(entry.slots)
        entry.slots = slots
        if slots:
            self._holding.add(entry)
        else:
            self._holding.discard(entry)
        entry.fed = max(entry.fed, len(slots))
        if slots and not had and entry.node.parent is not None:
            self.get(entry.node.parent).cached_children += 1

    def _clear(self, entry: NodeKV, evicted: bool = True) -> None:
        if entry.slots:
            self.pool.free(entry.slots)
            if evicted:
                self.evicted_tokens += len(entry.slots)
            entry.slots = []
            self._holding.discard(entry)
            parent = entry.node.parent
            if parent is not None and parent in self._entries:
                self._entries[parent].cached_children -= 1
        entry.head_hidden = None

    def _drop(self, entry: NodeKV) -> None:
        self._clear(entry, evicted=False)
        self._entries.pop(entry.node, None)

    def release(self, node: Node) -> None:
        """Tree hook: ``node`` was pruned; free its slots now, or when its last pin goes."""
        entry = self._entries.get(node)
        if entry is None:
            return
        if entry.pins:
            entry.dead = True
        else:
            self._drop(entry)

    def evict(self, need: int) -> int:
        """Free slots of least recently used unpinned cached leaves until ``need`` are free in the
        pool, plus the slack (or nothing more can go); returns how many slots were freed."""
        if self.pool.n_free >= need:
            return 0
        if self.pool.limit is not None:
            need = min(need + int(self.evict_slack * self.pool.limit), self.pool.limit)
        heap = [(e.last_use, id(e), e) for e in self._holding if e.pins == 0 and e.cached_children == 0]
        heapq.heapify(heap)
        freed = 0
        while heap and self.pool.n_free < need:
            _, _, e = heapq.heappop(heap)
            if not e.slots or e.pins or e.cached_children:
                continue
            freed += len(e.slots)
            self._clear(e)
            parent = e.node.parent
            if parent is not None:
                pe = self._entries.get(parent)
                if pe is not None and pe.slots and pe.pins == 0 and pe.cached_children == 0:
                    heapq.heappush(heap, (pe.last_use, id(pe), pe))
        return freed

    def forget_all(self) -> int:
        """Free every cached slot and hidden state (the weights they were computed under are gone);
        nothing may be pinned. Returns how many slots were freed."""
        freed = 0
        for entry in self._entries.values():
            if entry.pins:
                raise RuntimeError("forget_all with pinned entries")
            freed += len(entry.slots)
            self.pool.free(entry.slots)
        self._entries.clear()
        self._holding.clear()
        return freed

    def drop_tree_nodes(self, nodes: list[Node]) -> None:
        """Free every entry of ``nodes`` that no request pins (a finished problem)."""
        for node in nodes:
            self.release(node)
