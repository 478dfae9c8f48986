"""reason: search-based reasoning and test-time scaling on one shared prefix-caching tree.

The package's floors (see docs/architecture.md): :mod:`reason.core` is the ground (tree, ledger,
engines, drafting, the async runner); :mod:`rewards` and :mod:`search` stand on it; :mod:`tasks`
on those; the front ends (:mod:`reason.cli`, :mod:`reason.serve`, :mod:`reason.rl` and the
shortcuts re-exported here) on top.
"""

from reason.core.engine import Engine, ExpandRequest, Sampling, Stop, load_engine
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger
from reason.core.tree import Node, Tree
from reason.shortcuts import (
           GenerateResult,
           Sample,
           generate,
           rollout,
           solve,
           solve_many,
)
from rewards.catalog import load_prm, load_value
from tasks.registry import load_suite, resolve_model

__version__ = "0.1.0"

__all__ = ["Engine", "ExpandRequest", "GenerateResult", "Ledger", "Node", "ReasonError", "Sample", "Sampling", "Stop",
           "Tree", "generate", "load_engine", "load_prm", "load_suite", "load_value", "resolve_model", "rollout",
           "solve", "solve_many"]
