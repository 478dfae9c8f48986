"""Search strategies over the shared tree (best-of-N, beam, MCTS, A*, particle filtering, TreePO, ...).

Strategies are registered by name in :data:`strategies` and run through :mod:`reason.core.context`.
"""

from reason.core.registry import Registry

strategies: Registry = Registry("strategy")

__all__ = ["strategies"]

# Registrations (after the registry exists).
from search import astar, basic, beam, first_finish, mcts, particle, treepo
