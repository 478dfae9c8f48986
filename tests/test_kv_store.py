"""The KV store's eviction: least recently used unpinned leaves first, parents after their
children, pinned paths never, and one scan serving many steps of a full pool (the slack)."""

from __future__ import annotations

import torch

from reason.core.engine.hf.kv import KVPool, NodeStore
from reason.core.tree import Tree


def store_of(limit: int, slack: float) -> tuple[KVPool, NodeStore]:
    pool = KVPool(1, 1, 1, torch.float32, torch.device("cpu"), max_slots=limit, initial_slots=limit)
    return pool, NodeStore(pool, evict_slack=slack)


def chain(store: NodeStore, pool: KVPool, tree: Tree, lengths: list[int]):
    """A path of nodes under the root holding ``lengths`` slots each; returns their entries."""
    node, out = tree.root, []
    for n in lengths:
        node = tree.add_child(node, [3] * n)
        entry = store.get(node)
        store.set_slots(entry, pool.alloc(n))
        store.touch(entry)
        out.append(entry)
    return out


def test_lru_leaves_go_first_and_pins_hold():
    pool, store = store_of(100, slack=0.0)
    old, new = Tree([1]), Tree([2])
    a = chain(store, pool, old, [10, 10])
    b = chain(store, pool, new, [10, 10])
    pinned = store.pin([e.node for e in b])
    assert pool.n_free == 60
    freed = store.evict(70)  # the old tree's leaf, then its parent (now a leaf)
    assert freed == 10 and pool.n_free == 70 and not a[1].slots and a[0].slots
    freed = store.evict(90)  # the old parent; the pinned path stays however short the pool is
    assert freed == 10 and not a[0].slots and all(e.slots for e in b)
    assert store.evict(100) == 0
    store.unpin(pinned)
    assert store.evict(100) == 20 and pool.n_free == 100


def test_slack_frees_ahead_so_one_scan_serves_many_steps():
    scans = {}
    for slack in (0.0, 0.25):
        pool, store = store_of(400, slack=slack)
        for i in range(38):  # 38 cached leaves of 10 slots: 380 of 400 slots
            chain(store, pool, Tree([i + 1]), [10])
        tree = Tree([99])
        growing = store.get(tree.add_child(tree.root, [5]))
        store.pin([growing.node])
        n = 0
        for _ in range(60):  # a step appends 4 tokens and evicts when short
            n += store.evict(4) > 0
            store.set_slots(growing, growing.slots + pool.alloc(4))
        scans[slack] = n
        assert len(growing.slots) == 240 and store.evicted_tokens >= 220
    assert scans[0.0] >= 20 and scans[0.25] <= scans[0.0] // 4
