"""reason: search-based reasoning and test-time scaling on one shared prefix-caching tree."""

from reason.budget import Ledger
from reason.engine import Engine, ExpandRequest, Sampling, Stop, load_engine
from reason.errors import ReasonError
from reason.tree import Node, Tree

__version__ = "0.1.0"

__all__ = ["Engine", "ExpandRequest", "Ledger", "Node", "ReasonError", "Sampling", "Stop", "Tree", "load_engine"]
