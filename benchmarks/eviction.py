"""The KV store of a full, long-lived engine: what a decode step pays for eviction.

A server at its KV budget evicts on every step that needs slots. This fills a ``NodeStore`` over
a one-float-per-slot ``KVPool`` (no model: the bookkeeping is what is measured) with ``--trees``
trees of branching nodes of ``--node`` tokens until the pool holds ``--slots`` tokens, then runs
``--steps`` decode steps, each appending one token to each of ``--batch`` new leaves of the most
recent tree, which evicts least recently used leaves of older trees once the pool is full. The
same workload runs with the store's eviction slack (it frees that share of the budget beyond a
step's need, so one scan over the cached entries serves many steps) and without it (``slack 0``:
one scan per step, the behaviour before), side by side in one process. Prints CPU microseconds of
``evict`` per step, the scans, and tokens evicted.

Run: ``python benchmarks/eviction.py [--slots 2000000] [--node 32] [--steps 2000] [--batch 16]``.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from reason.core.engine.hf.kv import KVPool, NodeStore
from reason.core.tree import Node, Tree


def fill(store: NodeStore, pool: KVPool, slots: int, node: int, rng: random.Random) -> list[Node]:
    """Trees of random branching filling ``slots`` of the pool; returns the leaves (cached)."""
    leaves: list[Node] = []
    held = 0
    while held < slots - 4 * node:
        tree = Tree([1, 2, 3, 4])
        frontier = [tree.root]
        store.set_slots(store.get(tree.root), pool.alloc(4))
        held += 4
        while frontier and held < slots - 4 * node:
            parent = frontier.pop(0)
            for _ in range(rng.randint(1, 3)):
                child = tree.add_child(parent, [5] * node)
                entry = store.get(child)
                store.set_slots(entry, pool.alloc(node))
                store.touch(entry)
                held += node
                if len(tree) < 64:
                    frontier.append(child)
                else:
                    leaves.append(child)
    return leaves


def run(slots: int, node: int, steps: int, batch: int, slack: float, seed: int) -> tuple[float, int, int]:
    """CPU seconds spent in evict over ``steps`` steps, the scans it made, tokens evicted."""
    pool = KVPool(1, 1, 1, torch.float32, torch.device("cpu"), max_slots=slots, initial_slots=slots)
    store = NodeStore(pool, evict_slack=slack)
    fill(store, pool, slots, node, random.Random(seed))
    tree = Tree([9, 9])
    store.set_slots(store.get(tree.root), pool.alloc(2))
    growing = [store.get(tree.add_child(tree.root, [7])) for _ in range(batch)]
    for e in growing:
        e.pins += 1  # running sequences' nodes are pinned
    scans = 0
    spent = 0.0
    for _ in range(steps):
        began = time.process_time()
        freed = store.evict(batch)
        spent += time.process_time() - began
        scans += freed > 0
        for e in growing:
            store.set_slots(e, e.slots + pool.alloc(1))
    return spent, scans, store.evicted_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=2_000_000, help="the pool's budget in tokens")
    parser.add_argument("--node", type=int, default=32, help="tokens per cached node")
    parser.add_argument("--steps", type=int, default=2000, help="decode steps at a full pool")
    parser.add_argument("--batch", type=int, default=16, help="sequences decoded per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for slack in (0.0, NodeStore.EVICT_SLACK):
        spent, scans, evicted = run(args.slots, args.node, args.steps, args.batch, slack, args.seed)
        rows.append((slack, spent, scans, evicted))
    print(f"pool {args.slots} tokens in nodes of {args.node}; {args.steps} steps of {args.batch} sequences")
    print("| eviction slack | evict us / step (CPU) | scans | tokens evicted |")
    print("| --- | --- | --- | --- |")
    for slack, spent, scans, evicted in rows:
        print(f"| {slack:.4f} | {1e6 * spent / args.steps:.1f} | {scans} | {evicted} |")
    print(f"ratio (slack 0 / slack {NodeStore.EVICT_SLACK:.4f}): {rows[0][1] / max(rows[1][1], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
