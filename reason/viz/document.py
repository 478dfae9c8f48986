"""What the tree viewer draws: one :class:`TreeView` per search, read from the JSON the toolkit writes.

Three sources hold a search: ``reason solve --json --show-tree`` output and ``/v1/solve`` replies
with ``include_tree`` (a search result: answer, candidates, chosen node, ledger, ``tree``), a bare
tree (:meth:`reason.core.tree.Tree.to_dict`), and eval records written with ``--save-trees`` (the
search result under ``search``). :func:`views_from_json` turns any of them into views;
:func:`load_views` reads a ``.json`` file or a ``.jsonl`` run. The formats are in
docs/tree-schema.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reason.core.errors import ReasonError
from reason.core.tree import TREE_SCHEMA_VERSION

VIEW_SCHEMA_VERSION = 1
"""The version of the page's embedded data (``{"version", "title", "views", "panes"}``)."""


class TreeView(BaseModel):
    """One search as the page shows it: labels, the chosen node, candidates, the ledger and the tree.

    ``tree`` is a tree dict (docs/tree-schema.md); ``pieces`` maps a node id (as a string) to the
    text of each of its tokens, for colouring tokens by logprob (absent: the page colours whole
    characters only when a node has one character per token)."""

    label: str
    problem: str = ""
    strategy: str | None = None
    answer: str | None = None
    gold: str | None = None
    correct: bool | None = None
    chosen: int | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    ledger: dict[str, Any] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    tree: dict[str, Any]
    pieces: dict[str, list[str]] | None = None
    key: str | None = None  # what the same problem is called in another run (id and budget), for pairing


def _check_tree(tree: Any, where: str) -> dict[str, Any]:
    if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list) or not tree["nodes"]:
        raise ReasonError(where, "holds no tree (a dict with a non-empty 'nodes' list)",
                          "save it with reason solve --json --show-tree, or reason eval --save-trees")
    version = tree.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= TREE_SCHEMA_VERSION:
        raise ReasonError(where, f"tree schema version {version!r} is not one this viewer reads (1 to "
                          f"{TREE_SCHEMA_VERSION})", "upgrade reason")
    for node in tree["nodes"]:
        if not isinstance(node, dict) or "id" not in node or "parent" not in node:
            raise ReasonError(where, "a node lacks 'id' or 'parent'", "give nodes as Tree.to_dict writes them")
    return tree


def _question(tree: dict[str, Any]) -> str:
    meta = tree.get("meta") or {}
    for key in ("question", "problem"):
        if isinstance(meta.get(key), str):
            return meta[key]
    root = next((n for n in tree["nodes"] if n.get("parent") is None), tree["nodes"][0])
    return str(root.get("text", ""))


def view_from_result(result: dict[str, Any], label: str, where: str, **fields: Any) -> TreeView:
    """A view of a search result dict (``SearchResult.to_json_dict(include_tree=True)``)."""
    tree = _check_tree(result.get("tree"), where)
    return TreeView(label=label, problem=_question(tree), strategy=result.get("strategy"), answer=result.get("answer"),
                    chosen=result.get("chosen"), candidates=list(result.get("candidates") or []),
                    ledger=dict(result.get("ledger") or tree.get("ledger") or {}), info=dict(result.get("info") or {}),
                    tree=tree, **fields)


def views_from_json(data: Any, where: str, name: str = "") -> list[TreeView]:
    """The views in one JSON value: a search result, a bare tree or an eval record (``where`` names
    it in errors, ``name`` prefixes labels)."""
    if not isinstance(data, dict):
        raise ReasonError(where, "is not a JSON object", "give a tree, a search result or an eval record")
    prefix = f"{name} · " if name else ""
    if "search" in data and "budget" in data:  # an eval record
        if not data.get("search"):
            return []
        mark = {True: " ✓", False: " ✗"}.get(data.get("correct"), "")
        key = f"{data.get('id')} · budget {data.get('budget')}"
        return [view_from_result(data["search"], f"{prefix}{key} · {data.get('label', '')}{mark}", where,
                                 gold=data.get("gold"), correct=data.get("correct"), key=key)]
    if "tree" in data:
        strategy = data.get("strategy") or "search"
        return [view_from_result(data, f"{prefix}{strategy}", where)]
    tree = _check_tree(data, where)
    return [TreeView(label=f"{prefix}tree", problem=_question(tree), ledger=dict(tree.get("ledger") or {}), tree=tree)]


def load_views(path: str | Path) -> list[TreeView]:
    """Views from a file: a ``.jsonl`` eval run (records saved with ``--save-trees``), or one JSON value."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        try:
            return views_from_json(json.loads(text), str(path), path.stem)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # several JSON values: read it as lines
                raise ReasonError(str(path), f"is not JSON ({exc.msg} at line {exc.lineno})",
                                  "give reason solve --json --show-tree output or an eval run (.jsonl)") from None
    views: list[TreeView] = []
    rows = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rows += 1
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReasonError(f"{path}:{number}", f"is not JSON ({exc.msg})", "give one JSON record per line") from None
        views.extend(views_from_json(data, f"{path}:{number}", path.stem))
    if not views:
        raise ReasonError(str(path), f"none of its {rows} record(s) holds a tree",
                          "run reason eval with --save-trees to keep each problem's tree")
    return views


def add_pieces(view: TreeView, decode: Callable[[Sequence[int]], str]) -> TreeView:
    """Fill ``view.pieces`` with each token's text, decoded one token at a time (memoised per id)."""
    cache: dict[int, str] = {}

    def piece(token: int) -> str:
        if token not in cache:
            cache[token] = decode([token])
        return cache[token]

    view.pieces = {str(n["id"]): [piece(t) for t in n.get("token_ids", [])]
                   for n in view.tree["nodes"] if n.get("parent") is not None}
    return view


def search_view(result: Any, decode: Callable[[Sequence[int]], str] | None = None, label: str | None = None) -> TreeView:
    """A view of a search result (a ``SearchResult`` or its ``to_json_dict(include_tree=True)``),
    with token texts when ``decode`` (an engine's or tokenizer's ``decode``) is given."""
    data = result.to_json_dict(include_tree=True) if hasattr(result, "to_json_dict") else result
    view = view_from_result(data, label or str(data.get("strategy") or "search"), "result")
    return add_pieces(view, decode) if decode is not None else view


def pair_panes(views: Sequence[TreeView], first_of_second: int | None) -> list[int]:
    """The panes a page opens with: the first view alone, or, when a second input starts at
    ``first_of_second``, the first view beside the second input's view of the same problem."""
    if first_of_second is None or first_of_second >= len(views):
        return [0]
    match = next((i for i in range(first_of_second, len(views))
                  if views[0].key is not None and views[i].key == views[0].key), first_of_second)
    return [0, match]
