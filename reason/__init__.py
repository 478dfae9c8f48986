"""reason: search-based reasoning and test-time scaling on one shared prefix-caching tree."""

from reason.budget import Ledger
from reason.engine import Engine, ExpandRequest, Sampling, Stop, load_engine
from reason.errors import ReasonError
from reason.tree import Node, Tree

__version__ = "0.1.0"


def rollout(engine: Engine, prompts: list, **options: object) -> list:
    """Rollout records for RL trainers from any strategy (see :func:`search.rollout.rollout`)."""
    from search.rollout import rollout as run

    return run(engine, prompts, **options)


__all__ = ["Engine", "ExpandRequest", "Ledger", "Node", "ReasonError", "Sampling", "Stop", "Tree", "load_engine", "rollout"]
