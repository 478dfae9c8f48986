"""Search strategies over the shared tree (best-of-N, beam, MCTS, A*, particle filtering, TreePO, ...).

Strategies are registered by name in :data:`strategies`, each with its options model
(:mod:`search.options`), and run through :mod:`reason.core.context`.
"""

from search.options import StrategyOptions, StrategyRegistry

strategies = StrategyRegistry()

__all__ = ["StrategyOptions", "strategies"]

# Registrations (after the registry exists).
from search import astar, basic, beam, first_finish, mcts, particle, treepo
