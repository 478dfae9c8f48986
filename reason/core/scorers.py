"""What a search calls on its scorers, as structural types: any object with these methods will do.

Searches work on tree nodes: :class:`PRMScorer` (a PRM wrapped for nodes, e.g.
``rewards.scoring.NodeScorer``) and :class:`ValueScorer` (a value model wrapped for nodes, e.g.
``rewards.scoring.NodeValuer``) are what :class:`~reason.core.context.SearchContext` holds as
``prm`` and ``value``. Both are tree scorers (:class:`TreeScorer`): the runner hands every
problem's queued calls to one ``score_many`` call, so scorer work batches across problems.
:class:`Verifier` is what rollouts ask of a verifier (``rewards.base.OutcomeVerifier`` is one).
The model-level interfaces (question and steps in, scores out) are the ABCs of
:mod:`rewards.base`; this ground layer only names the calls.

The protocols are ``runtime_checkable``: ``isinstance(x, PRMScorer)`` checks that the method is
there (not its signature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from reason.core.tree import Node, Tree


@runtime_checkable
class TreeScorer(Protocol):
    """Scores the nodes of many trees in one call: one list of floats per ``(tree, nodes)``
    request, in order (cached per node and charged to each tree's ledger by implementations)."""

    def score_many(self, requests: Sequence[tuple[Tree, Sequence[Node]]]) -> list[list[float]]: ...


@runtime_checkable
class PRMScorer(TreeScorer, Protocol):
    """Scores nodes with a process reward model: one aggregated score in [0, 1] per node, in order
    (``score`` for one tree, ``score_many`` for many)."""

    def score(self, tree: Tree, nodes: Sequence[Node]) -> list[float]: ...


@runtime_checkable
class ValueScorer(TreeScorer, Protocol):
    """Values nodes with a value model: the expected final reward of each node's path, in order
    (``value`` for one tree, ``score_many`` for many)."""

    def value(self, tree: Tree, nodes: Sequence[Node]) -> list[float]: ...


@runtime_checkable
class Verifier(Protocol):
    """Grades final answers: one score per item (1.0 correct, 0.0 wrong for exact graders). An item
    has ``question``, ``response`` and ``reference`` (``rewards.base.VerifyItem``)."""

    def verify_batch(self, items: Sequence[Any]) -> list[float]: ...
