"""The search tree viewer: one self-contained, offline HTML page drawn from tree JSON.

:mod:`reason.viz.document` reads searches (solve output, bare trees, eval runs) into
:class:`TreeView` objects; :mod:`reason.viz.page` writes the page (``assets/viewer.js`` draws it);
:mod:`reason.viz.browser` drives a headless chromium for tests, screenshots and timings.
docs/viewer.md and docs/tree-schema.md describe the page and the JSON.
"""

from reason.viz.document import (
    TreeView,
    add_pieces,
    load_views,
    pair_panes,
    search_view,
    view_from_result,
    views_from_json,
)
from reason.viz.page import build_page, check_page_path, content_security_policy, write_page

__all__ = ["TreeView", "add_pieces", "build_page", "check_page_path", "content_security_policy", "load_views", "pair_panes",
           "search_view", "view_from_result", "views_from_json", "write_page"]
