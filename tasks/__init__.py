"""Problem suites (math500, aime24, aime25, arith), prompts, grading and metrics, registered by name."""

from reason.registry import Registry

suites: Registry = Registry("suite")

__all__ = ["suites"]


def load_suite(spec: str, **options):
    """The problems of suite ``spec`` (``name`` or ``name:argument``, e.g. ``arith:3``)."""
    from tasks import math_suites as _math  # noqa: F401  (registers math500, aime24, aime25)
    from tasks.arith import suite as _arith  # noqa: F401  (registers "arith")

    name, _, arg = spec.partition(":")
    return suites.get(name)(arg or None, **options)
