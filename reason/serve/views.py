"""Tree pages of ``/v1/solve`` results: ``GET /v1/views/{id}`` serves the viewer page (docs/viewer.md)
of a search asked for with ``include_tree``, whose reply names the page in ``view_url``.

The page sits under ``/v1/``, so it is behind the same API key as the rest of the API (a browser
sends no key: fetch it with the header, e.g. ``curl -H "Authorization: Bearer KEY" URL > tree.html``;
a server without a key serves it to any browser). The ids are random, and the server keeps only the
latest :data:`MAX_VIEWS` searches (older ids answer 404). The page is the same self-contained file
``reason solve --html`` writes, sent with its Content-Security-Policy as a header too.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from reason.viz import build_page, content_security_policy, search_view

MAX_VIEWS = 64
"""How many searches' pages the server keeps (the oldest go first)."""


class ViewStore:
    """The latest searches with trees, by random id (thread-safe: searches finish in threads)."""

    def __init__(self, decode: Callable[[Sequence[int]], str] | None, max_views: int = MAX_VIEWS) -> None:
        self.decode = decode
        self.max_views = max_views
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: dict[str, Any]) -> str:
        """Keep a search result dict (with its ``tree``) and return its id."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.max_views:
                self._results.popitem(last=False)
        return key

    def page(self, key: str) -> str | None:
        """The viewer page of the search kept under ``key``, or None when it is unknown or gone."""
        with self._lock:
            result = self._results.get(key)
        if result is None:
            return None
        view = search_view(result, self.decode, f"{result.get('strategy') or 'search'} (served)")
        return build_page([view], title=f"reason · {view.problem.strip()[:80] or 'search tree'}")


def register_views(app: FastAPI, decode: Callable[[Sequence[int]], str] | None) -> ViewStore:
    """Add ``GET /v1/views/{view_id}`` to ``app``; the returned store is where ``/v1/solve`` keeps results."""
    store = ViewStore(decode)

    @app.get("/v1/views/{view_id}", name="tree_view", response_class=HTMLResponse)
    async def tree_view(view_id: str) -> HTMLResponse:
        page = await run_in_threadpool(store.page, view_id)
        if page is None:
            raise HTTPException(404, f"view {view_id[:40]!r}: no such search here (the server keeps the latest "
                                f"{store.max_views}); run /v1/solve with include_tree again")
        return HTMLResponse(page, headers={"Content-Security-Policy": content_security_policy(),
                                           "Cache-Control": "no-store"})

    return store


def keep_view(store: ViewStore, request: Request, result: dict[str, Any]) -> dict[str, Any]:
    """Keep ``result`` (a ``/v1/solve`` reply with its tree) and add the page's URL as ``view_url``."""
    result["view_url"] = str(request.url_for("tree_view", view_id=store.add(result)))
    return result
