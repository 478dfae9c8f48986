"""``reason view``: the tree viewer page from saved searches (a tree, solve output, eval runs)."""

from __future__ import annotations

from typing import Any

import click

from reason.cli.app import friendly, main
from reason.core.errors import ReasonError
from reason.viz import add_pieces, check_page_path, load_views, pair_panes, write_page
from tasks.registry import resolve_model

MAX_VIEWS = 2000
"""The most trees one page holds (a run's records beyond it are refused: pick a smaller run or shard)."""


def _decoder(model: str) -> Any:
    """A tokenizer's ``decode`` for ``--model`` (a bundled task name, a checkpoint directory or a hub id)."""
    from transformers import AutoTokenizer  # only when asked: the page itself needs no model

    return AutoTokenizer.from_pretrained(resolve_model(model)).decode


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The HTML page to write.")
@click.option("--model", default=None,
              help="A model whose tokenizer splits each node into its tokens, for colouring tokens by logprob "
                   "(e.g. arith); without it only one-character-per-token nodes are split.")
@click.option("--title", default=None, help="The page title (default: the input names).")
@friendly
def view(inputs: tuple[str, ...], out: str, model: str | None, title: str | None) -> None:
    """Write one self-contained HTML page showing the search trees in INPUTS.

    Each input is a tree or a search (``reason solve --json --show-tree`` output, a /v1/solve reply
    with include_tree) or an eval run (``reason eval --save-trees --out RUN.jsonl``). A page with
    several trees has a picker; with two inputs it opens them side by side (the same problem and
    budget when both are runs)."""
    check_page_path(out)
    views, starts = [], []
    for path in inputs:
        starts.append(len(views))
        views.extend(load_views(path))
    if len(views) > MAX_VIEWS:
        raise ReasonError("INPUTS", f"hold {len(views)} trees, over the {MAX_VIEWS} one page takes",
                          "view fewer records (e.g. one budget, or a shard of the run)")
    if model is not None:
        decode = _decoder(model)
        views = [add_pieces(v, decode) for v in views]
    panes = pair_panes(views, starts[1] if len(starts) > 1 else None)
    page = write_page(out, views, panes, title or " · ".join(inputs))
    click.echo(f"wrote {page} ({len(views)} tree(s), {sum(len(v.tree['nodes']) for v in views)} nodes)")
