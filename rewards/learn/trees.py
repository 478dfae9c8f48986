"""Reading saved search trees for the target builder.

Accepted inputs (files or directories, read in sorted order):

* a JSONL file of records whose rows carry the tree: ``reason eval --out RUN --save-trees`` keeps it
  under ``"search"`` -> ``"tree"`` (a :meth:`Tree.to_dict`, docs/tree-schema.md), ``reason solve
  --json --show-tree`` and the library's ``SearchResult.to_json_dict(include_tree=True)`` under
  ``"tree"``; rows that are tree dicts themselves work too;
* a JSON file holding one tree dict or a list of them;
* a directory: every ``*.json`` and ``*.jsonl`` file in it (trees saved one per file beside a run).

A record's ``id`` and ``gold`` (or ``answer`` in the tree's own meta) fill the tree's
``meta["id"]`` / ``meta["answer"]`` when the tree lacks them, so leaves can be graded and targets
split by problem. Lines that are neither are counted and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError
from reason.core.tree import Tree


def _is_tree(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def tree_of(row: Any) -> Tree | None:
    """The tree a row holds (a tree dict, or a record with ``"tree"``), with the record's problem id
    and reference answer filled into its meta; None when the row holds no tree."""
    if _is_tree(row):
        return Tree.from_dict(row)
    if not isinstance(row, dict):
        return None
    search = row.get("search")
    saved = search.get("tree") if isinstance(search, dict) else row.get("tree")
    if not _is_tree(saved):
        return None
    tree = Tree.from_dict(saved)
    for key, field in (("id", "id"), ("answer", "gold"), ("question", "question")):
        if tree.meta.get(key) is None and row.get(field) is not None:
            tree.meta[key] = row[field]
    if row.get("level") is not None:
        tree.meta.setdefault("level", row["level"])
    return tree


def _rows(path: Path) -> Iterator[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReasonError("trees", f"{path} is not JSON ({exc.msg} at line {exc.lineno})", "give a saved tree file") from None
        yield from (data if isinstance(data, list) else [data])
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            raise ReasonError("trees", f"{path} line {number} is not JSON", "give JSONL records or tree files") from None


def files_of(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, directories expanded to their ``*.json`` / ``*.jsonl`` files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".json", ".jsonl") and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise ReasonError("trees", f"{p}: no such file or directory", "check the path")
    return out


def read_trees(paths: Iterable[str | Path]) -> list[Tree]:
    """Every tree held by ``paths`` (see the module docstring); a one-line error when none is."""
    files = files_of(paths)
    trees = [t for f in files for row in _rows(f) if (t := tree_of(row)) is not None]
    if not trees:
        raise ReasonError("trees", f"no saved tree in {', '.join(map(str, files)) or 'the paths given'}",
                          "save trees with the run (reason eval --save-trees) or give tree JSON files")
    return trees
