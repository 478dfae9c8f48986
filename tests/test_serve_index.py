"""The server's prompt index: a radix tree over token ids, and placement in the served trees that
does not slow down with what the server holds."""

from __future__ import annotations

import random

from reason.serve.radix import TokenRadix
from reason.serve.tree_index import PromptIndex


def test_radix_longest_prefix_matches_a_brute_force_search():
    rng = random.Random(0)
    for _ in range(200):
        radix, stored = TokenRadix(), {}
        for _ in range(60):
            key = tuple(rng.randint(0, 3) for _ in range(rng.randint(1, 6)))
            if rng.random() < 0.6:
                value = object()
                stored.setdefault(key, value)
                assert radix.insert(key, value) is stored[key]  # the older value wins
            elif stored:
                gone = rng.choice(list(stored))
                assert radix.remove(gone, stored.pop(gone))
                assert not radix.remove(gone, object())
            ids = tuple(rng.randint(0, 3) for _ in range(rng.randint(0, 8)))
            start = rng.randint(0, len(ids))
            best = max((k for k in stored if ids[start : start + len(k)] == k), key=len, default=None)
            value, end = radix.longest(ids, start)
            if best is None:
                assert (value, end) == (None, start)
            else:
                assert value is stored[best] and end == start + len(best)
            assert len(radix) == len(stored)


def grow(index: PromptIndex, ids: list[int], children: list[list[int]]):
    """One served request: place ``ids``, add ``children`` under it, report it done."""
    tree, node, reused = index.place(ids)
    kids = [tree.add_child(node, c, "") for c in children]
    index.done(tree, sum(map(len, children)), kids)
    return tree, node, reused


def test_placement_finds_the_deepest_node_among_many_siblings(engine):
    index = PromptIndex(engine)
    prompt = [5, 6, 7, 8]
    rng = random.Random(1)
    kids = [[rng.randrange(3, 90) for _ in range(rng.randint(1, 6))] for _ in range(600)]
    tree, root, reused = grow(index, prompt, kids)
    assert root is tree.root and reused == 0
    for at in (0, 299, 599):
        want = next(c for c in tree.root.children if c.token_ids == kids[at])  # the oldest of equal siblings
        _, node, reused = grow(index, prompt + kids[at], [])
        assert node is want and reused == len(prompt) + len(kids[at])
    # a path through a child and further: the rest becomes one new node under that child
    path = prompt + kids[10] + [40, 41, 42]
    same_tree, node, reused = grow(index, path, [[9, 9]])
    assert same_tree is tree and node.token_ids == [40, 41, 42] and reused == len(prompt) + len(kids[10])
    assert tree.prefix_ids(node) == path
    _, again, reused = grow(index, path + [9, 9], [])
    assert again.parent is node and again.token_ids == [9, 9] and reused == len(path) + 2
    assert index.reused_tokens >= reused and len(index) == 1


def test_roots_nest_and_eviction_forgets_them(engine):
    index = PromptIndex(engine, max_tokens=40)
    long, _, _ = grow(index, [5, 6, 7, 8, 9], [])
    short, _, _ = grow(index, [5, 6], [])
    assert long is not short  # a prompt that is not a path of the first tree: a tree of its own
    again, node, reused = grow(index, [5, 6, 7, 8, 9, 10], [])
    assert again is long and node.token_ids == [10] and reused == 5  # the longest root wins
    _, node, _ = grow(index, [5, 6, 11], [])
    assert node.parent is short.root
    for i in range(8):  # fill past 40 tokens: the least recently used trees go
        grow(index, [20 + i] * 6, [])
    assert index.tokens <= 40
    fresh, node, reused = grow(index, [5, 6, 7, 8, 9, 10], [])
    assert fresh is not long and node is fresh.root and reused == 0  # forgotten, not matched stale
