"""Problem suites (math500, aime24, aime25, arith), prompts, grading, evaluation and metrics.

Every suite is a :class:`~tasks.registry.Task` in :data:`~tasks.registry.tasks`; importing this
package registers them all (and the arith scorers in :mod:`rewards`' registries).
"""

from tasks.registry import Task, get_domain, get_task, load_suite, resolve_model, tasks

__all__ = ["Task", "get_domain", "get_task", "load_suite", "resolve_model", "tasks"]

# Registrations (after the registry exists).
from tasks import math_suites  # noqa: E402,F401
from tasks.arith import task as _arith  # noqa: E402,F401
