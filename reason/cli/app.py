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


def _option_name(name: str) -> str:
    """How the user wrote the parameter ``name`` of the running command (``--prm``, ``PROMPT``)."""
    ctx = click.get_current_context(silent=True)
    for param in ctx.command.params if ctx is not None else ():
        if param.name == name:
            return param.opts[0] if isinstance(param, click.Option) else name.upper()
    return name


def check_text(kwargs: dict[str, Any]) -> None:
    """Refuse text arguments holding bytes that are not UTF-8 (the shell hands them to Python as
    lone surrogates, which no tokenizer or file takes): a one-line :class:`ReasonError` naming the
    argument."""
    for name, value in kwargs.items():
        for text in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ReasonError(_option_name(name), f"holds bytes that are not UTF-8 (at character {exc.start + 1})",
                                      "pass UTF-8 text") from None


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`ReasonError`, a file that cannot be read or written, and a file that is not
    UTF-8 into a one-line message and exit status 2; text arguments are checked first (:func:`check_text`)."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_text(kwargs)
            return fn(*args, **kwargs)
        except ReasonError as exc:
            _fail(str(exc))
        except FileNotFoundError as exc:
            _fail(f"{exc.filename}: no such file; check the path")
        except UnicodeDecodeError as exc:  # a reader that does not name its file (they should)
            _fail(f"input: a file holds bytes that are not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset "
                  f"{exc.start}); save it as UTF-8")
        except OSError as exc:
            if exc.filename is None:
                raise
            _fail(f"{exc.filename}: {exc.strerror or type(exc).__name__}; check the path and its permissions")

    return wrapper


@click.group()
@click.version_option(package_name="reason")
def main() -> None:
    """Search-based reasoning and test-time scaling on one shared prefix-caching tree."""
