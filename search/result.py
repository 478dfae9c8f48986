"""The one result object every strategy returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reason.core.ledger import Ledger
from reason.core.tree import Tree


class Candidate(BaseModel):
    """A finished solution the strategy considered: its text, extracted answer, score, node, and
    ``count``: how many samples (or particles) it stands for, counted in votes and rollouts."""

    text: str
    answer: str | None
    score: float | None = None
    node_id: int
    count: int = 1


class SearchResult(BaseModel):
    """The chosen answer, the candidates with scores, the tree and the ledger of one search."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    strategy: str
    answer: str | None
    text: str
    candidates: list[Candidate]
    chosen: int | None = None  # the node id of the chosen candidate (its path is the answer's)
    ledger: Ledger
    info: dict[str, Any] = Field(default_factory=dict)  # strategy diagnostics (e.g. beams kept per step)
    tree: Tree = Field(exclude=True)

    def to_json_dict(self, include_tree: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the tree only when asked."""
        out = self.model_dump(mode="json")
        if include_tree:
            out["tree"] = self.tree.to_dict()
        return out
