"""The ``reason`` command group and the one-line error handling every command shares: bad input
prints one line naming the field and exits with status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from reason.core.errors import ReasonError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`ReasonError` (and a missing file) into a one-line message and exit status 2."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReasonError as exc:
            _fail(str(exc))
        except FileNotFoundError as exc:
            _fail(f"{exc.filename}: no such file; check the path")

    return wrapper


@click.group()
@click.version_option(package_name="reason")
def main() -> None:
    """Search-based reasoning and test-time scaling on one shared prefix-caching tree."""
