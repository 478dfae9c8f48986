"""The viewer page: one self-contained HTML file holding the views' JSON, the script and the style.

Nothing on the page is fetched: the script (``assets/viewer.js``) and style (``assets/viewer.css``)
are inline, the data sits in a ``<script type="application/json">`` element, and a
Content-Security-Policy allows only those two inline blocks (by hash) and ``data:`` images, so the
page cannot make a request even if a node's text holds markup (text is only ever set as text).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from reason.core.errors import ReasonError
from reason.viz.document import VIEW_SCHEMA_VERSION, TreeView


@cache
def asset(name: str) -> str:
    """The text of a viewer asset shipped with the package (``viewer.js``, ``viewer.css``)."""
    return resources.files("reason.viz").joinpath("assets", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def content_security_policy() -> str:
    """The page's policy: no source at all but the inline script and style (by hash) and data: images."""
    return (f"default-src 'none'; script-src {_sha256(asset('viewer.js'))}; style-src {_sha256(asset('viewer.css'))}; "
            "img-src data:; base-uri 'none'; form-action 'none'")


def _finite(data: object) -> object:
    """``data`` with NaN and infinities as None (JSON has no such numbers; the page shows them as missing)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def _json_for_html(data: object) -> str:
    """JSON that cannot end its ``<script>`` element early, whatever the model wrote."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or infinite score or logprob somewhere
        text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def build_page(views: Sequence[TreeView], panes: Sequence[int] | None = None, title: str = "reason · search tree") -> str:
    """The HTML page showing ``views`` (a picker lists them all); ``panes``: the indexes shown side by
    side at first (one or two; default the first view)."""
    if not views:
        raise ReasonError("views", "is empty", "give at least one tree")
    shown = list(panes or [0])
    if not 1 <= len(shown) <= 2 or any(not 0 <= i < len(views) for i in shown):
        raise ReasonError("panes", f"{shown} is not one or two indexes of the {len(views)} view(s)", "pick e.g. [0] or [0, 1]")
    data = {"version": VIEW_SCHEMA_VERSION, "title": title, "panes": shown,
            "views": [v.model_dump(mode="json") for v in views]}
    script, style = asset("viewer.js"), asset("viewer.css")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{content_security_policy()}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head><body>\n"
        "<noscript>This page draws the search tree with JavaScript; enable it to see the tree.</noscript>\n"
        f"<script type=\"application/json\" id=\"reason-data\">{_json_for_html(data)}</script>\n"
        f"<script>{script}</script>\n</body></html>\n"
    )


def check_page_path(path: str | Path, field: str = "out") -> Path:
    """``path`` as a page to write: it must end in .html (checked before any work is done)."""
    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise ReasonError(field, f"{path} does not end in .html", "name the page e.g. tree.html")
    return Path(path)


def write_page(path: str | Path, views: Sequence[TreeView], panes: Sequence[int] | None = None,
               title: str = "reason · search tree") -> Path:
    """Write :func:`build_page` to ``path`` (UTF-8) and return the path."""
    out = check_page_path(path)
    out.write_text(build_page(views, panes, title), encoding="utf-8")
    return out
