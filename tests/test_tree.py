"""The shared tree: paths, pruning, JSON round-trip and networkx export."""

from __future__ import annotations

import pytest

from reason.core.errors import ReasonError
from reason.core.tree import Tree


def small_tree() -> Tree:
    t = Tree([1, 2, 3], "abc", meta={"id": "p0"})
    a = t.add_child(t.root, [4, 5], "de", [-0.1, -0.2], "stop")
    t.add_child(t.root, [6], "f", [-0.3], "length")
    c = t.add_child(a, [7], "g", [-0.4], "eos")
    c.scores["prm"] = 0.75
    c.extra["visits"] = 3
    return t


def test_paths_and_text():
    t = small_tree()
    c = t.node(3)
    assert [n.id for n in t.path(c)] == [0, 1, 3]
    assert t.prefix_ids(c) == [1, 2, 3, 4, 5, 7]
    assert t.text(c) == "deg" and t.text(c, include_prompt=True) == "abcdeg"
    assert t.steps(c) == ["de", "g"]
    assert {n.id for n in t.leaves()} == {2, 3}
    assert c.depth == 2 and c.finished
    assert t.ledger.prompt_tokens == 3 and t.ledger.unique_tree_tokens == 7


def test_json_round_trip_and_networkx():
    t = small_tree()
    back = Tree.from_json(t.to_json())
    assert back.to_dict() == t.to_dict()
    g = back.to_networkx()
    assert set(g.edges) == {(0, 1), (0, 2), (1, 3)}
    assert g.nodes[3]["scores"] == {"prm": 0.75}
    new = back.add_child(back.node(2), [8], "h")
    assert new.id == 4


def test_prune_releases_and_reserved_ids_order_children():
    t = small_tree()
    released = []
    t.add_release_hook(lambda n: released.append(n.id))
    assert t.prune(t.node(1)) == 2
    assert sorted(released) == [1, 3] and len(t) == 2
    ids = t.reserve_ids(2)
    late = t.add_child(t.root, [9], node_id=ids[1])
    early = t.add_child(t.root, [8], node_id=ids[0])
    assert [n.id for n in t.root.children] == [2, early.id, late.id]
    with pytest.raises(ReasonError):
        t.prune(t.root)
    with pytest.raises(ReasonError):
        Tree([])
