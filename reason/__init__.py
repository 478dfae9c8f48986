"""reason: search-based reasoning and test-time scaling on one shared prefix-caching tree.

The package's floors (see docs/architecture.md): :mod:`reason.core` is the ground (tree, ledger,
engines, drafting, the async runner); :mod:`rewards` and :mod:`search` stand on it; :mod:`tasks`
on those; the front ends (:mod:`reason.cli`, :mod:`reason.serve`, :mod:`reason.rl` and the
shortcuts re-exported here) on top.

The ground's names are imported here; the shortcuts (``reason.solve``, ``reason.rollout``, ...) and
the scorer and suite loaders are loaded on first use, because they stand on the upper floors: every
module of ``rewards``, ``search`` and ``tasks`` imports the ground through this package, and must be
importable first without pulling the whole house in.
"""

from importlib import import_module
from typing import Any

from reason.core.engine import Engine, ExpandRequest, Sampling, Stop, load_engine
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger
from reason.core.tree import Node, Tree

__version__ = "0.1.0"

_LAZY = {
    "generate": "reason.shortcuts", "solve": "reason.shortcuts", "solve_many": "reason.shortcuts",
    "rollout": "reason.shortcuts", "GenerateResult": "reason.shortcuts", "Sample": "reason.shortcuts",
    "load_prm": "rewards.catalog", "load_value": "rewards.catalog",
    "load_suite": "tasks.registry", "resolve_model": "tasks.registry",
}


def __getattr__(name: str) -> Any:
    """The shortcuts and loaders of the upper floors, imported when first asked for."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reason' has no attribute {name!r}")


__all__ = ["Engine", "ExpandRequest", "GenerateResult", "Ledger", "Node", "ReasonError", "Sample", "Sampling", "Stop",
           "Tree", "generate", "load_engine", "load_prm", "load_suite", "load_value", "resolve_model", "rollout",
           "solve", "solve_many"]
