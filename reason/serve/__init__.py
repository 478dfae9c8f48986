"""``reason serve``: an OpenAI-compatible HTTP server over one engine (see :mod:`reason.serve.app`).

:func:`create_app` is imported on first use, so :mod:`reason.serve.limits` (which the command line
reads for its defaults) loads without fastapi installed."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from reason.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
