"""``reason serve``: an OpenAI-compatible HTTP server over one engine (see :mod:`reason.serve.app`)."""

from __future__ import annotations

from reason.serve.app import create_app

__all__ = ["create_app"]
