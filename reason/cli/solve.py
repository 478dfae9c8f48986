"""``reason solve``: one problem, one strategy, the answer and (with ``--show-tree``) the tree."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.tree import Tree as RichTree

from reason.cli.app import friendly, main
from reason.cli.options import (
    MAX_BUDGET,
    build_engine,
    check_count,
    check_sampling,
    engine_options,
    load_scorers,
    parse_options,
    sampling_options,
)
from reason.core.errors import ReasonError
from reason.shortcuts import solve as run_solve
from reason.viz import check_page_path, search_view, write_page
from rewards.scoring import AGGREGATIONS
from search.solve import check_options, make_budget, strategy_options
from tasks.registry import get_domain


@main.command()
@click.argument("problem")
@click.option("--strategy", "-s", default="best_of_n", show_default=True, help="Search strategy.")
@click.option("--budget", "-b", type=int, default=16, show_default=True,
              help=f"Full-solution equivalents (at most {MAX_BUDGET}).")
@click.option("--budget-tokens", type=int, default=None,
              help="Cap on generated tokens for the whole search (compute-matched runs); the strategy stops within it.")
@engine_options
@click.option("--suite", default="arith", show_default=True, help="The problem's domain (prompt, step delimiter, answers).")
@click.option("--prm", "prm_spec", default="arith", show_default=True, help="NAME[=PATH_OR_ID|URL], or 'none' (URL: a reason serve or vllm serve scoring it).")
@click.option("--aggregation", default="last", show_default=True, type=click.Choice(AGGREGATIONS),
              help="How the PRM's step scores make one score (model: the whole solution as one step).")
@click.option("--value", "value_spec", default=None, help="NAME[=PATH_OR_ID] of a value model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", "-t", type=float, default=0.8, show_default=True)
@sampling_options
@click.option("--select", default=None, help="How the answer is chosen: best_of_n prm|majority|weighted (default prm); particle weight|vote.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A strategy option, e.g. -o segment_tokens=16 -o policy=low_prob (values read as JSON when they parse).")
@click.option("--show-tree", is_flag=True, help="Draw the search tree.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the tree when --show-tree).")
@click.option("--html", "html_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the search as one self-contained interactive HTML page (docs/viewer.md).")
@friendly
def solve(
    problem: str,
    strategy: str,
    budget: int,
    budget_tokens: int | None,
    model: str,
    backend: str,
    dtype: str,
    device: str | None,
    cache_tokens: int | None,
    draft: str | None,
    remote: dict[str, Any],
    suite: str,
    prm_spec: str,
    aggregation: str,
    value_spec: str | None,
    seed: int,
    temperature: float,
    sampling_fields: dict[str, Any],
    select: str | None,
    options: tuple[str, ...],
    show_tree: bool,
    as_json: bool,
    html_out: str | None,
) -> None:
    """Solve PROBLEM with a search strategy and print the answer."""
    if not problem.strip():
        raise ReasonError("PROBLEM", "is empty", "give the problem text")
    check_sampling("", temperature=temperature, **sampling_fields)  # also for strategies that do not sample
    extra = parse_options(options)
    if select:
        extra["select"] = select
    if "temperature" in strategy_options(strategy):  # not greedy's; -o temperature=... wins
        extra.setdefault("temperature", temperature)
    check_options(strategy, extra)  # bad options fail before any model loads, as do the rest
    if html_out is not None:
        check_page_path(html_out, "html")
    make_budget(budget, budget_tokens)
    check_count("budget", budget, MAX_BUDGET, "solutions")
    get_domain(suite).make_problem(problem)
    prm, value = load_scorers(prm_spec, value_spec, dtype, device, backend)
    engine = build_engine(model, backend, dtype, device, cache_tokens, draft, remote, prm)
    result = run_solve(engine, problem, strategy=strategy, budget=budget, suite=suite, prm=prm, value=value, seed=seed,
                       budget_tokens=budget_tokens, aggregation=aggregation, sampling=sampling_fields or None, **extra)
    if html_out is not None:
        write_page(html_out, [search_view(result, engine.decode, f"{strategy} · budget {budget}")], title=problem)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(include_tree=show_tree)))
        return

    console = Console()
    console.print(f"[bold]answer:[/bold] {result.answer}")
    console.print(result.text)
    if show_tree:
        console.print(_render_tree(result.tree))
    led = result.ledger
    console.print(f"{len(result.candidates)} candidate(s) · generated {led.generated_tokens} "
                  f"({led.merged_tokens} merged into identical siblings) · prefill {led.prefill_tokens} · "
                  f"PRM calls {led.prm_calls} · {led.wall_seconds:.2f}s")


def _render_tree(tree: Any):
    """A rich Tree of the search tree: each node's text (one line) with its multiplicity (``x3``: three
    samples gave this node), finish reason and scores."""
    def label(node: Any) -> str:
        text = node.text.strip().replace("\n", " | ") or "(prompt)"
        scores = " ".join(f"{k}={v:.2f}" for k, v in node.scores.items())
        times = f" x{node.count}" if node.count > 1 else ""
        return (f"[{node.id}]{times} {text[:80]}" + (f"  ({node.finish_reason})" if node.finish_reason else "")
                + (f"  {scores}" if scores else ""))

    root = RichTree(label(tree.root))
    stack = [(tree.root, root)]
    while stack:
        node, branch = stack.pop()
        for child in node.children:
            sub = branch.add(label(child))
            stack.append((child, sub))
    return root
