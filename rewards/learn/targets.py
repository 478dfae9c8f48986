"""Training targets from search trees: node values, step labels and step preferences.

A search tree whose finished leaves are graded (right or wrong against the problem's reference)
already says how good every node above them is:

* **MC value** (:func:`mc_values`): a node's value is the share of correct finished leaves below
  it, each leaf weighted by its multiplicity (:attr:`Node.count`: a merged leaf stands for that
  many samples); the summed multiplicity is the target's ``count`` (how much evidence it rests on).
  Nodes with no graded leaf below get no target.
* **TD(lambda)** (:func:`td_values`): ``G(s) = (1 - lambda) * B(s) + lambda * mean_c G(c)`` over the
  valued children ``c`` of ``s`` weighted by their counts, with ``G`` of a graded leaf its grade and
  ``B(s)`` the search's own estimate of ``s`` (MCTS's ``Q = W / N`` from ``node.extra["mcts"]``, the
  MC value where the search kept none). ``lambda = 1`` is the MC value computed level by level
  (each branch weighted by how often it was sampled, not by how many leaves the search grew under
  it); ``lambda = 0`` is the search's own statistic.
* **Step labels** (:func:`step_labels`, Math-Shepherd's automatic process labels): each finished
  leaf's path split into steps on the step delimiter; a step's label is the value of the node in
  which the step (with its delimiter) ends, so a step the search later branched from gets the value
  of everything below it, and a step inside a whole-solution node gets that node's grade.
* **Preference pairs** (:func:`preference_pairs`, rStar-Math's step preferences): siblings that
  share a prefix and whose values differ by at least ``margin``, the better one ``chosen``.

Targets carry their problem's id; :func:`split_by_problem` assigns whole problems to train or
held-out by a hash of the id (so no problem lands on both sides whatever order the trees come in),
and ``exclude`` drops problems (a test suite's) before anything is built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from pydantic import BaseModel, Field

from reason.core.errors import ReasonError
from reason.core.scorers import Verifier
from reason.core.tree import Node, Tree
from rewards.base import VerifyItem

Grade = Callable[[Tree, Node], "float | None"]
"""The grade of a finished node (1.0 right, 0.0 wrong), or None when it cannot be graded."""


class ValueTarget(BaseModel):
    """One prefix and its value target (``value``: TD(lambda) when asked, else ``mc``)."""

    problem: str
    question: str
    partial: str
    value: float
    mc: float
    count: int = Field(ge=1)
    depth: int


class StepLabels(BaseModel):
    """One solution's steps with a label in [0, 1] per step (and the count behind each)."""

    problem: str
    question: str
    steps: list[str]
    labels: list[float]
    counts: list[int]


class PreferencePair(BaseModel):
    """Two sibling steps after the same prefix: ``chosen`` led to right answers more often."""

    problem: str
    question: str
    prefix: str
    chosen: str
    rejected: str
    chosen_value: float
    rejected_value: float
    chosen_count: int
    rejected_count: int


class TargetSet(BaseModel):
    """Everything built from a set of trees."""

    values: list[ValueTarget] = Field(default_factory=list)
    steps: list[StepLabels] = Field(default_factory=list)
    pairs: list[PreferencePair] = Field(default_factory=list)

    def problems(self) -> set[str]:
        """The problem ids the targets come from."""
        return {t.problem for part in (self.values, self.steps, self.pairs) for t in part}

    def where(self, keep: Callable[[str], bool]) -> TargetSet:
        """The targets of the problems ``keep`` accepts."""
        return TargetSet(values=[t for t in self.values if keep(t.problem)],
                         steps=[t for t in self.steps if keep(t.problem)],
                         pairs=[t for t in self.pairs if keep(t.problem)])


def problem_id(tree: Tree) -> str:
    """The tree's problem id: ``meta["id"]``, else a digest of its question (or prompt)."""
    if tree.meta.get("id") is not None:
        return str(tree.meta["id"])
    return "q-" + hashlib.sha256(question_text(tree).encode()).hexdigest()[:12]


def question_text(tree: Tree) -> str:
    """What scorers see as the question: ``meta["question"]``, else the prompt text."""
    return str(tree.meta.get("question", tree.root.text))


def answer_grader(extract: Callable[[str], str | None], verifier: Verifier) -> Grade:
    """A :data:`Grade` for finished nodes: the answer extracted from the node's path text checked
    by ``verifier`` against ``tree.meta["answer"]`` (None when the tree has no reference or the node
    is not finished). Only the final answer is checked, never the steps."""
    def grade(tree: Tree, node: Node) -> float | None:
        reference = tree.meta.get("answer")
        if reference is None or not node.finished:
            return None
        text = tree.text(node)
        if extract(text) is None:
            return 0.0
        return float(verifier.verify_batch([VerifyItem(question_text(tree), text, str(reference))])[0])

    return grade


def _postorder(tree: Tree) -> list[Node]:
    return list(reversed(list(tree)))  # ids grow down the tree: children come after parents


def mc_values(tree: Tree, grade: Grade) -> dict[int, tuple[float, int]]:
    """``node id -> (value, count)``: the count-weighted share of correct graded leaves below each
    node (the node itself included when it is a graded leaf); nodes without one are left out."""
    right: dict[int, float] = {}
    total: dict[int, int] = {}
    for node in _postorder(tree):
        r, n = 0.0, 0
        if not node.children:
            g = grade(tree, node)
            if g is not None:
                r, n = g * node.count, node.count
        for c in node.children:
            r, n = r + right.get(c.id, 0.0), n + total.get(c.id, 0)
        if n:
            right[node.id], total[node.id] = r, n
    return {i: (right[i] / total[i], total[i]) for i in total}


def search_estimate(node: Node) -> float | None:
    """The search's own value of ``node``: MCTS's ``W / N`` when it visited the node."""
    stats = node.extra.get("mcts")
    if isinstance(stats, dict) and stats.get("N"):
        return float(stats["W"]) / float(stats["N"])
    return None


def td_values(tree: Tree, mc: dict[int, tuple[float, int]], lam: float) -> dict[int, float]:
    """TD(lambda) targets of the nodes ``mc`` values (see the module docstring)."""
    if not 0.0 <= lam <= 1.0:
        raise ReasonError("td_lambda", f"must be in [0, 1] (got {lam})", "use e.g. 0.8, or 1 for plain MC values")
    out: dict[int, float] = {}
    for node in _postorder(tree):
        if node.id not in mc:
            continue
        kids = [c for c in node.children if c.id in out]
        if not kids:
            out[node.id] = mc[node.id][0]  # a graded leaf (or only its own grade below)
            continue
        weight = sum(c.count for c in kids)
        below = sum(out[c.id] * c.count for c in kids) / weight
        own = search_estimate(node)
        out[node.id] = (1 - lam) * (mc[node.id][0] if own is None else own) + lam * below
    return out


def value_targets(tree: Tree, grade: Grade, *, td_lambda: float | None = None, min_count: int = 1,
                  include_root: bool = True) -> list[ValueTarget]:
    """One target per node with at least ``min_count`` graded leaf samples below it."""
    mc = mc_values(tree, grade)
    td = td_values(tree, mc, td_lambda) if td_lambda is not None else None
    question, pid = question_text(tree), problem_id(tree)
    out = []
    for node in tree:
        if node.id not in mc or mc[node.id][1] < min_count or (node.is_root and not include_root):
            continue
        value, count = mc[node.id]
        out.append(ValueTarget(problem=pid, question=question, partial=tree.text(node),
                               value=value if td is None else td[node.id], mc=value, count=count, depth=node.depth))
    return out


def step_labels(tree: Tree, grade: Grade, delimiter: str, *, values: dict[int, float] | None = None) -> list[StepLabels]:
    """Per-step labels of every graded finished leaf's path (see the module docstring); ``values``
    overrides the MC values (e.g. TD targets)."""
    if not delimiter:
        raise ReasonError("delimiter", "is empty", "give the policy's step delimiter, e.g. '\\n'")
    mc = mc_values(tree, grade)
    value = values or {i: v for i, (v, _) in mc.items()}
    question, pid = question_text(tree), problem_id(tree)
    out = []
    for leaf in tree.leaves():
        if leaf.id not in mc or not leaf.finished:
            continue
        path = tree.path(leaf)[1:]
        ends, at = [], 0  # each node's end offset in the path text
        for node in path:
            at += len(node.text)
            ends.append(at)
        text = tree.text(leaf)
        steps, labels, counts, start = [], [], [], 0
        for piece in text.split(delimiter):
            stop = start + len(piece)
            if piece.strip():
                last = min(stop + len(delimiter), len(text)) - 1  # the step's last char, delimiter included
                owner = next(n for n, end in zip(path, ends) if end > last)
                steps.append(piece)
                labels.append(value.get(owner.id, mc[leaf.id][0]))
                counts.append(mc.get(owner.id, mc[leaf.id])[1])
            start = stop + len(delimiter)
        if steps:
            out.append(StepLabels(problem=pid, question=question, steps=steps, labels=labels, counts=counts))
    return out


def preference_pairs(tree: Tree, grade: Grade, *, margin: float = 0.5, min_count: int = 1) -> list[PreferencePair]:
    """Sibling pairs whose MC values differ by at least ``margin`` (each side with at least
    ``min_count`` graded samples below), the better sibling ``chosen``."""
    mc = mc_values(tree, grade)
    question, pid = question_text(tree), problem_id(tree)
    out = []
    for node in tree:
        kids = [c for c in node.children if c.id in mc and mc[c.id][1] >= min_count]
        for a in kids:
            for b in kids:
                if mc[a.id][0] - mc[b.id][0] >= margin:
                    out.append(PreferencePair(problem=pid, question=question, prefix=tree.text(node), chosen=a.text,
                                              rejected=b.text, chosen_value=mc[a.id][0], rejected_value=mc[b.id][0],
                                              chosen_count=mc[a.id][1], rejected_count=mc[b.id][1]))
    return out


def merge_values(targets: Iterable[ValueTarget]) -> list[ValueTarget]:
    """One target per (problem, prefix): trees of the same problem (several rounds, strategies)
    pool their evidence, values weighted by counts."""
    pooled: dict[tuple[str, str], list[ValueTarget]] = {}
    for t in targets:
        pooled.setdefault((t.problem, t.partial), []).append(t)
    out = []
    for group in pooled.values():
        n = sum(t.count for t in group)
        out.append(group[0].model_copy(update={
            "count": n, "value": sum(t.value * t.count for t in group) / n, "mc": sum(t.mc * t.count for t in group) / n}))
    return out


def build_targets(trees: Iterable[Tree], grade: Grade, *, delimiter: str, td_lambda: float | None = None,
                  margin: float = 0.5, min_count: int = 1, exclude: Iterable[str] = ()) -> TargetSet:
    """Value targets (merged across trees of one problem), step labels and preference pairs of
    ``trees``, leaving out the problems whose id or question text is in ``exclude``."""
    skip = set(exclude)
    out = TargetSet()
    for tree in trees:
        if problem_id(tree) in skip or question_text(tree) in skip:
            continue
        mc = mc_values(tree, grade)
        td = td_values(tree, mc, td_lambda) if td_lambda is not None else None
        out.values += value_targets(tree, grade, td_lambda=td_lambda, min_count=min_count)
        out.steps += step_labels(tree, grade, delimiter, values=td)
        out.pairs += preference_pairs(tree, grade, margin=margin, min_count=min_count)
    out.values = merge_values(out.values)
    return out


def holdout_share(problem: str, salt: str = "") -> float:
    """A stable number in [0, 1) from the problem id (and ``salt``)."""
    return int(hashlib.sha256(f"{salt}{problem}".encode()).hexdigest()[:12], 16) / 16**12


def split_by_problem(targets: TargetSet, holdout: float = 0.1, *, salt: str = "") -> tuple[TargetSet, TargetSet]:
    """``(train, held_out)``: each problem wholly on one side, by :func:`holdout_share`."""
    if not 0.0 <= holdout < 1.0:
        raise ReasonError("holdout", f"must be in [0, 1) (got {holdout})", "use e.g. 0.1")
    held = {p for p in targets.problems() if holdout_share(p, salt) < holdout}
    return targets.where(lambda p: p not in held), targets.where(lambda p: p in held)


def check_disjoint(train: TargetSet, held: TargetSet | Sequence[str]) -> None:
    """Raise a one-line error when a held-out problem also has training targets."""
    other = held.problems() if isinstance(held, TargetSet) else set(held)
    both = train.problems() & other
    if both:
        raise ReasonError("split", f"{len(both)} problem(s) on both sides (e.g. {sorted(both)[0]})",
                          "split by problem (split_by_problem) or exclude the held-out ids")


def save_targets(targets: TargetSet, path: str | Path) -> None:
    """Write the targets as one JSON file."""
    Path(path).write_text(targets.model_dump_json(), encoding="utf-8")
