"""Problem suites (math500, aime24, aime25, arith), prompts, grading and metrics, registered by name."""

from reason.registry import Registry

suites: Registry = Registry("suite")

__all__ = ["suites"]
