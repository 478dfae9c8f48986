"""The target builder on hand-made trees: MC values with counts, TD(lambda), step labels, preference
pairs, the split by problem, and reading trees back from saved records."""

from __future__ import annotations

import json

import pytest

from reason.core.errors import ReasonError
from reason.core.tree import Tree
from rewards.learn.targets import (
    answer_grader,
    build_targets,
    check_disjoint,
    mc_values,
    preference_pairs,
    split_by_problem,
    step_labels,
    td_values,
    value_targets,
)
from rewards.learn.trees import read_trees
from tasks.arith.scorers import ArithVerifier
from tasks.arith.task import arith_answer


def tree_of(question: str = "2+3*4", answer: str = "14", pid: str = "p1") -> Tree:
    """root -> "3*4=12\\n" (a, count 3) -> "2+12=14\\n" -> right (count 2) / wrong (count 1)
              -> "2+3=5\\n"  (b, count 1) -> "5*4=20\\nanswer: 20" (finished, one node, wrong)."""
    tree = Tree([1, 2, 3], f"{question}\n", meta={"question": question, "answer": answer, "id": pid})
    a = tree.add_child(tree.root, [4], "3*4=12\n", finish_reason="stop")
    a.count = 3
    a2 = tree.add_child(a, [5], "2+12=14\n", finish_reason="stop")
    right = tree.add_child(a2, [6], "answer: 14", finish_reason="eos")
    right.count = 2
    tree.add_child(a2, [7], "answer: 15", finish_reason="eos")
    b = tree.add_child(tree.root, [8], "2+3=5\n", finish_reason="stop")
    tree.add_child(b, [9, 10], "5*4=20\nanswer: 20", finish_reason="eos")
    a.extra["mcts"] = {"N": 4, "W": 1.0}  # the search's own (pessimistic) estimate of a
    return tree


@pytest.fixture
def grade():
    return answer_grader(arith_answer, ArithVerifier())


def test_mc_values_weight_leaves_by_count(grade):
    tree = tree_of()
    mc = mc_values(tree, grade)
    by_text = {tree.text(n): mc[n.id] for n in tree if n.id in mc}
    assert by_text["3*4=12\n2+12=14\nanswer: 14"] == (1.0, 2)
    assert by_text["3*4=12\n2+12=14\n"] == (pytest.approx(2 / 3), 3)
    assert by_text["2+3=5\n"] == (0.0, 1)
    assert by_text[""] == (pytest.approx(2 / 4), 4)


def test_td_lambda_between_search_estimate_and_mc(grade):
    tree = tree_of()
    mc = mc_values(tree, grade)
    a = tree.root.children[0]
    assert td_values(tree, mc, 1.0)[a.id] == pytest.approx(2 / 3)
    assert td_values(tree, mc, 0.0)[a.id] == pytest.approx(0.25)  # MCTS's W / N
    assert td_values(tree, mc, 0.5)[a.id] == pytest.approx(0.5 * 0.25 + 0.5 * 2 / 3)
    # level by level, the root weighs its children by how often each was sampled (3 : 1)
    assert td_values(tree, mc, 1.0)[tree.root.id] == pytest.approx((3 * 2 / 3 + 0.0) / 4)
    with pytest.raises(ReasonError, match="td_lambda"):
        td_values(tree, mc, 1.5)


def test_step_labels_take_the_value_of_the_node_where_each_step_ends(grade):
    tree = tree_of()
    rows = {tuple(r.steps): r for r in step_labels(tree, grade, "\n")}
    good = rows[("3*4=12", "2+12=14", "answer: 14")]
    assert good.labels == [pytest.approx(2 / 3), pytest.approx(2 / 3), 1.0]
    assert good.counts == [3, 3, 2]
    whole = rows[("2+3=5", "5*4=20", "answer: 20")]
    assert whole.labels == [0.0, 0.0, 0.0]  # the two last steps sit in one finished node


def test_preference_pairs_and_targets(grade):
    tree = tree_of()
    pairs = preference_pairs(tree, grade, margin=0.5)
    assert {(p.prefix, p.chosen, p.rejected) for p in pairs} == {
        ("3*4=12\n2+12=14\n", "answer: 14", "answer: 15"), ("", "3*4=12\n", "2+3=5\n")}
    assert not preference_pairs(tree, grade, margin=0.9, min_count=2)
    assert {t.partial for t in value_targets(tree, grade, min_count=3)} == {"", "3*4=12\n", "3*4=12\n2+12=14\n"}


def test_split_by_problem_never_shares_a_problem(grade):
    trees = [tree_of(pid=f"p{i}") for i in range(40)] + [tree_of(pid="p3")]
    targets = build_targets(trees, grade, delimiter="\n")
    # the two trees of p3 pooled their evidence: one target per prefix, counts added
    root_p3 = [t for t in targets.values if t.problem == "p3" and t.partial == ""]
    assert len(root_p3) == 1 and root_p3[0].count == 8
    train, held = split_by_problem(targets, 0.25)
    assert train.problems() and held.problems()
    assert not train.problems() & held.problems()
    assert train.problems() | held.problems() == {f"p{i}" for i in range(40)}
    check_disjoint(train, held)
    with pytest.raises(ReasonError, match="split"):
        check_disjoint(train, sorted(train.problems())[:1])
    kept = build_targets(trees, grade, delimiter="\n", exclude=["p1", "p2"])
    assert not {"p1", "p2"} & kept.problems()
    assert not build_targets(trees, grade, delimiter="\n", exclude=["2+3*4"]).problems()  # by question text too


def test_read_trees_from_records_and_files(tmp_path, grade):
    tree = tree_of()
    tree.meta.pop("answer")
    tree.meta.pop("id")
    records = tmp_path / "run.jsonl"
    records.write_text(json.dumps({"id": "p9", "gold": "14", "tree": tree.to_dict()}) + "\n"
                       + json.dumps({"id": "p10", "gold": "1"}) + "\n", encoding="utf-8")
    evaluated = tree_of()
    evaluated.meta = {"question": "2+3*4"}  # as reason eval --save-trees keeps it: under "search"
    (tmp_path / "eval.jsonl").write_text(json.dumps({"id": "p12", "gold": "14", "search": {"tree": evaluated.to_dict()}})
                                         + "\n", encoding="utf-8")
    (tmp_path / "one.json").write_text(tree_of(pid="p11").to_json(), encoding="utf-8")
    trees = read_trees([tmp_path])
    assert sorted(t.meta["id"] for t in trees) == ["p11", "p12", "p9"]
    assert next(t for t in trees if t.meta["id"] == "p12").meta["answer"] == "14"
    loaded = next(t for t in trees if t.meta["id"] == "p9")
    assert loaded.meta["answer"] == "14"  # the record's gold fills the tree's reference
    assert mc_values(loaded, grade)[loaded.root.id] == (pytest.approx(0.5), 4)
    with pytest.raises(ReasonError, match="no saved tree"):
        read_trees([_only_records(tmp_path)])


def _only_records(tmp_path):
    path = tmp_path / "bare.jsonl"
    path.write_text(json.dumps({"id": "p1", "gold": "3"}) + "\n", encoding="utf-8")
    return path
