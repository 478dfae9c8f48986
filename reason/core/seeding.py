"""Stable, counter-based randomness: every random choice is a pure function of a seed and an index.

Engines draw the uniform for token ``t`` of a sequence as ``uniform(seed, t)``, so a sequence's
tokens depend only on its own seed, never on batch composition, scheduling order or how many draft
tokens were tried and thrown away.
"""

from __future__ import annotations

import os

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    # splitmix64 finaliser: a bijection on 64-bit ints with good avalanche.
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``keys`` (e.g. a child index)."""
    x = _mix(seed & _MASK)
    for key in keys:
        x = _mix(x ^ (key & _MASK))
    return x >> 1


def uniform(seed: int, index: int) -> float:
    """The ``index``-th uniform in [0, 1) of the stream named by ``seed``."""
    return (_mix(_mix(seed & _MASK) ^ (index & _MASK)) >> 11) * (1.0 / (1 << 53))


def fresh_seed() -> int:
    """A random seed for callers that gave none (their results are then not reproducible)."""
    return int.from_bytes(os.urandom(8), "little") >> 1
