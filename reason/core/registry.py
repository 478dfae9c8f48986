"""Small name -> factory registries, so the CLI resolves strategies, scorers, suites and engine
backends by name without the core importing them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reason.core.errors import ReasonError

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories registered under names; ``kind`` names the CLI field in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated factory as ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name`` (a second registration of a name is an error)."""
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The factory registered as ``name``, or a one-line error listing the known names."""
        if name not in self._items:
            raise ReasonError(self.kind, f"unknown {self.kind} {name!r}", f"use one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
