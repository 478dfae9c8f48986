"""Scoring tree nodes: split a node's path into steps, ask the scorer, cache per node, charge the ledger.

:class:`NodeScorer` turns a PRM into "score these nodes":

* a node's path text (below the prompt) is split into steps on the policy's step delimiter;
* each node is scored at most once per aggregation; its per-step scores are kept in
  ``node.extra["<name>.steps"]`` and its aggregate in ``node.scores[<name>]``;
* with an incremental PRM (step ``k``'s score depends only on steps ``1..k``), one model item serves
  every requested node whose steps are a prefix of another's, so a batch of nodes on one path costs
  one item; already-scored ancestors are never re-sent;
* one :meth:`NodeScorer.score_many` call scores the nodes of many trees (the runner gathers every
  problem's queued calls into one) with one ``score_batch`` call of the PRM;
* ``prm_calls`` counts model items, ``prm_tokens`` the tokens fed (split over the trees by their
  items' share), ``prm_batches`` the ``score_batch`` calls a tree took part in; the scorer's own
  :attr:`NodeScorer.batches` counts the calls it made.

:class:`NodeValuer` does the same for value models (``value_calls``, ``value_batches``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from reason.core.errors import ReasonError
from reason.core.tree import Node, Tree
from rewards.base import ProcessRewardModel, ValueModel

AGGREGATIONS = ("last", "min", "prod", "mean", "model")


def aggregate(scores: Sequence[float], how: str) -> float:
    """Combine step scores: ``last``, ``min``, ``prod`` or ``mean`` (``model`` scores are already one)."""
    if not scores:
        raise ReasonError("scores", "is empty", "score at least one step")
    if how in ("last", "model"):
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ReasonError("aggregation", f"unknown aggregation {how!r}", f"use one of {', '.join(AGGREGATIONS)}")


def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of ``text``: the non-blank pieces between delimiters (PRM formats put their own step
    tags where the delimiters were)."""
    if not delimiter:
        raise ReasonError("delimiter", "is empty", "give the policy's step delimiter, e.g. '\\n\\n'")
    return [p for p in text.split(delimiter) if p.strip()]


def question_of(tree: Tree) -> str:
    """The problem text a scorer sees: ``tree.meta["question"]`` if set, else the prompt text."""
    return str(tree.meta.get("question", tree.root.text))


class NodeScorer:
    """Scores nodes of trees with a :class:`ProcessRewardModel` (see the module docstring)."""

    def __init__(
        self,
        prm: ProcessRewardModel,
        *,
        delimiter: str = "\n\n",
        aggregation: str = "last",
        name: str | None = None,
        question: Callable[[Tree], str] = question_of,
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ReasonError("aggregation", f"unknown aggregation {aggregation!r}", f"use one of {', '.join(AGGREGATIONS)}")
        self.prm = prm
        self.delimiter = delimiter
        self.aggregation = aggregation
        self.name = name or prm.name
        self.question = question
        self.batches = 0  # score_batch calls made

    @property
    def _steps_key(self) -> str:
        return f"{self.name}.{'model' if self.aggregation == 'model' else 'steps'}"

    def steps_of(self, tree: Tree, node: Node) -> list[str]:
        """The steps of ``node``'s path as this scorer sends them."""
        text = tree.text(node)
        if self.aggregation == "model":
            return [text.strip()] if text.strip() else []
        return split_steps(text, self.delimiter)

    def score(self, tree: Tree, nodes: Sequence[Node]) -> list[float]:
        """Aggregated scores of ``nodes`` of one tree (see :meth:`score_many`)."""
        return self.score_many([(tree, nodes)])[0]

    def score_many(self, requests: Sequence[tuple[Tree, Sequence[Node]]]) -> list[list[float]]:
        """Aggregated scores of each ``(tree, nodes)`` request's nodes (cached in
        ``node.scores[name]``), every unscored node of every tree in one PRM call."""
        key = self._steps_key
        plans = []
        for tree, nodes in requests:
            todo = [n for n in dict.fromkeys(nodes) if key not in n.extra]
            plans.append((tree, *self._plan(tree, todo, key)))
        items = [(self.question(tree), steps) for tree, send, _ in plans for steps in send.values()]
        if items:
            result = self.prm.score_batch(items)
            self.batches += 1
            it = iter(result.scores)
            for tree, send, serve in plans:
                for n, steps in send.items():
                    scores = next(it)
                    if len(scores) != len(steps):
                        raise ReasonError("prm", f"returned {len(scores)} scores for {len(steps)} steps", "check the PRM adapter")
                    n.extra[key] = [float(x) for x in scores]
                for n, (donor, count) in serve.items():
                    n.extra[key] = donor.extra[key][:count]
                if send:
                    tree.ledger.prm_calls += len(send)
                    tree.ledger.prm_tokens += round(result.tokens * len(send) / len(items))
                    tree.ledger.prm_batches += 1
        out = []
        for tree, nodes in requests:
            row = []
            for n in nodes:
                value = aggregate(n.extra[key], self.aggregation) if n.extra[key] else 0.0
                n.scores[self.name] = value
                row.append(value)
            out.append(row)
        return out

    def step_scores(self, tree: Tree, node: Node) -> list[float]:
        """Per-step scores of ``node``'s path (scoring it if needed)."""
        self.score(tree, [node])
        return list(node.extra[self._steps_key])

    def _plan(self, tree: Tree, nodes: list[Node],
              key: str) -> tuple[dict[Node, list[str]], dict[Node, tuple[Node, int]]]:
        """The nodes to send with their steps, and the nodes served by a sent node's scores (the
        donor and how many of its step scores are theirs)."""
        steps = {n: self.steps_of(tree, n) for n in nodes}
        for n in nodes:
            if not steps[n]:
                n.extra[key] = []  # nothing to score yet (only whitespace below the prompt)
        pending = [n for n in nodes if steps[n]]
        serve: dict[Node, tuple[Node, int]] = {}
        if self.prm.incremental and self.aggregation != "model":
            # Longest first: a node whose steps are a prefix of a longer request reads its scores
            # from that request's item.
            pending.sort(key=lambda n: -len(steps[n]))
            sent: list[Node] = []
            for n in pending:
                donor = next((m for m in sent if steps[m][: len(steps[n])] == steps[n]), None)
                if donor is None:
                    sent.append(n)
                else:
                    serve[n] = (donor, len(steps[n]))
            pending = sent
        return {n: steps[n] for n in pending}, serve


class NodeValuer:
    """Values of nodes from a :class:`ValueModel`, cached in ``node.scores[name]``.

    ``smoothing`` (``lambda`` in [0, 1), FETCH-style TD smoothing along the path) returns
    ``s(n) = (1 - lambda) * v(n) + lambda * s(parent)`` instead of the model's ``v(n)``, with
    ``s(root) = v(root)``: a node's estimate leans on its ancestors', which damps the model's
    noise from one step to the next (ancestors are valued too, once each, so the first call on a
    tree also values its root). The raw value stays in ``node.scores[name]``. An ensemble is a
    :class:`rewards.value.EnsembleValue` as the model.
    """

    def __init__(self, model: ValueModel, *, name: str | None = None, question: Callable[[Tree], str] = question_of,
                 smoothing: float = 0.0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ReasonError("smoothing", f"must be in [0, 1) (got {smoothing})", "use e.g. 0.5, or 0 for none")
        self.model = model
        self.name = name or model.name
        self.question = question
        self.smoothing = smoothing
        self.batches = 0  # value_batch calls made

    def value(self, tree: Tree, nodes: Sequence[Node]) -> list[float]:
        """Values of ``nodes`` of one tree (see :meth:`score_many`)."""
        return self.score_many([(tree, nodes)])[0]

    def score_many(self, requests: Sequence[tuple[Tree, Sequence[Node]]]) -> list[list[float]]:
        """Values of each ``(tree, nodes)`` request's nodes, every unvalued node of every tree in
        one model call; each node is valued once."""
        wanted = requests
        if self.smoothing:
            wanted = [(tree, [p for n in nodes for p in tree.path(n)]) for tree, nodes in requests]
        todo = [(tree, [n for n in dict.fromkeys(nodes) if self.name not in n.scores]) for tree, nodes in wanted]
        items = [(self.question(tree), tree.text(n)) for tree, nodes in todo for n in nodes]
        if items:
            result = self.model.value_batch(items)
            self.batches += 1
            it = iter(result.values)
            for tree, nodes in todo:
                for n in nodes:
                    n.scores[self.name] = float(next(it))
                if nodes:
                    tree.ledger.value_calls += len(nodes)
                    tree.ledger.value_batches += 1
        return [[self._smoothed(tree, n) for n in nodes] for tree, nodes in requests]

    def _smoothed(self, tree: Tree, node: Node) -> float:
        if not self.smoothing:
            return node.scores[self.name]
        out = None
        for n in tree.path(node):
            v = n.scores[self.name]
            out = v if out is None else (1 - self.smoothing) * v + self.smoothing * out
        return float(out)
