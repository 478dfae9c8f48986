"""``reason eval``: evaluation runs over suites at several budgets, resumable and shardable."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from reason.cli.app import friendly, main
from reason.cli.options import build_engine, check_sampling, engine_options, load_scorers, parse_options, sampling_options
from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.scoring import AGGREGATIONS
from search import strategies
from search.solve import check_options
from tasks.evaluation import (
    EvalConfig,
    evaluate,
    merge_runs,
    parse_budgets,
    parse_shard,
    read_records,
    run_lock,
)
from tasks.metrics import breakdown, curves, summarize, unique
from tasks.prompts import build_prompt
from tasks.ray_eval import evaluate_on_ray
from tasks.registry import get_domain, load_suite


MAX_FAILED_SHOWN = 10
"""How many failed problems the summary lists one per line (the rest are counted; every record keeps its error)."""


def _int_list(spec: str | None, field: str) -> list[int] | None:
    if not spec:
        return None
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise ReasonError(field, f"{spec!r} is not a comma-separated list of integers", f"write e.g. --{field} 1,2") from None


@main.command("eval")
@click.argument("merge_inputs", nargs=-1, type=click.Path())
@click.option("--suite", default="arith:3", show_default=True, help="math500, aime24, aime25, or arith[:levels].")
@click.option("--strategy", "-s", default="best_of_n", show_default=True)
@click.option("--budget", "-b", "budgets", default="1,4,16", show_default=True, help="Comma-separated budgets.")
@engine_options
@click.option("--prm", "prm_spec", default=None, help="NAME[=PATH_OR_ID|URL] or 'none' (default: arith for arith suites, else none).")
@click.option("--value", "value_spec", default=None, help="NAME[=PATH_OR_ID] of a value model.")
@click.option("--aggregation", default="last", show_default=True, type=click.Choice(AGGREGATIONS),
              help="How the PRM's step scores make one score (model: the whole solution as one step).")
@click.option("--budget-tokens", type=int, default=None,
              help="Cap on generated tokens per problem at every budget (compute-matched runs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", "-t", type=float, default=0.8, show_default=True)
@sampling_options
@click.option("--max-tokens", type=int, default=1024, show_default=True, help="Cap on each solution's tokens.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE", help="A strategy option (see reason solve).")
@click.option("--limit", type=int, default=None, help="Only the first N problems (after filters).")
@click.option("--levels", default=None, help="Comma-separated levels to keep.")
@click.option("--subjects", default=None, help="Comma-separated subjects to keep (math500).")
@click.option("--data", default=None, type=click.Path(),
              help="A local JSONL file in the MATH-500 schema (problem, answer, optional unique_id, level); also for arith.")
@click.option("--hub", is_flag=True, help="Read the suite from the HF hub (needs internet and `datasets`).")
@click.option("--prompt-template", default=None, help="A template name, or text with {problem}.")
@click.option("--shard", default=None, help="i/n: run the problems at positions i mod n (i from 0).")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="JSONL file of records (appended; resumes).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Problems searched at once.")
@click.option("--merge", is_flag=True, help="Join the shard files given as arguments into --out, then summarise.")
@click.option("--save-trees", is_flag=True,
              help="Keep each problem's search tree in its record (for reason view; files grow with the trees).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run the problems on a Ray cluster, one engine per worker: --ray starts a local one (or joins "
                   "RAY_ADDRESS's), --ray ADDRESS joins that one. Same records, resume and merge as a local run.")
@click.option("--ray-workers", type=int, default=None,
              help="With --ray: workers (default: the cluster's GPUs, or its CPUs for an engine on CPU).")
@friendly
def eval_command(merge_inputs: tuple[str, ...], suite: str, strategy: str, budgets: str, model: str, backend: str,
                 dtype: str, device: str | None, cache_tokens: int | None, draft: str | None, remote: dict[str, Any],
                 prm_spec: str | None, value_spec: str | None, aggregation: str, budget_tokens: int | None, seed: int, temperature: float, sampling_fields: dict[str, Any], max_tokens: int, options: tuple[str, ...], limit: int | None,
                 levels: str | None, subjects: str | None, data: str | None, hub: bool, prompt_template: str | None,
                 shard: str | None, out: str | None, batch_size: int, merge: bool, ray_address: str | None,
                 ray_workers: int | None, save_trees: bool) -> None:
    """Evaluate a strategy on a suite at several budgets: one record per problem and budget."""
    if merge:
        if not merge_inputs or not out:
            raise ReasonError("merge", "needs shard files and --out", "run reason eval --merge --out ALL.jsonl s0.jsonl s1.jsonl")
        records = merge_runs(merge_inputs, out)
        click.echo(f"merged {len(records)} records from {len(merge_inputs)} files into {out}")
        print_summary(records)
        return
    if merge_inputs:
        raise ReasonError("FILES", "are only taken with --merge", "drop them, or add --merge")

    strategies.get(strategy)
    plan = parse_budgets(budgets)
    part = parse_shard(shard)
    extra = parse_options(options)
    check_options(strategy, extra, {"temperature": temperature})
    temperature = extra.pop("temperature", temperature)  # -o temperature=T is --temperature T
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ReasonError("temperature", f"must be a finite number >= 0 (got {temperature})", "use e.g. --temperature 0.8")
    check_sampling("", **sampling_fields)
    if max_tokens < 1:
        raise ReasonError("max-tokens", f"must be at least 1 (got {max_tokens})", "use e.g. --max-tokens 1024")
    if batch_size < 1:
        raise ReasonError("batch-size", f"must be at least 1 (got {batch_size})", "use e.g. 32")
    if save_trees and out is None:
        raise ReasonError("save-trees", "needs --out (the trees go into the run's records)", "add --out RUN.jsonl, or drop --save-trees")
    if ray_workers is not None and (ray_address is None or ray_workers < 1):
        raise ReasonError("ray-workers", f"{ray_workers} needs --ray and at least 1", "add --ray, or drop --ray-workers")
    name = suite.partition(":")[0]
    domain = get_domain(name)
    filters: dict[str, Any] = {"limit": limit, "data": data}
    if name != "arith":
        filters.update(levels=_int_list(levels, "levels"), hub=hub,
                       subjects=[s.strip() for s in subjects.split(",")] if subjects else None)
    elif levels or subjects or hub:
        raise ReasonError("suite", "arith takes its levels in the name, and no --subjects/--hub",
                          "write e.g. --suite arith:3 or arith:1,2 (with --data FILE for your own problems)")
    if budget_tokens is not None and budget_tokens < 1:
        raise ReasonError("budget-tokens", f"must be a positive number of tokens (got {budget_tokens})",
                          "use e.g. --budget-tokens 2000")
    problems = load_suite(suite, **filters)
    skipped = getattr(problems, "skipped", [])
    for note in skipped:
        click.echo(f"skipped {note}", err=True)
    if not problems:
        raise ReasonError("suite", f"{suite} has no problems left after the filters" + (f" in {data}" if data else ""),
                          "check --data, --levels, --subjects and --limit")
    if prm_spec is None:
        prm_spec = "arith" if name == "arith" else "none"
    config = EvalConfig(suite=suite, strategy=strategy, model=model, prm=None if prm_spec == "none" else prm_spec,
                        value=value_spec, seed=seed, temperature=temperature, max_tokens=max_tokens, options=extra,
                        aggregation=aggregation, budget_tokens=budget_tokens, sampling=sampling_fields,
                        prompt_template=prompt_template, data=data, levels=_int_list(levels, "levels"),
                        subjects=subjects.split(",") if subjects else None)
    if out is None:
        records = _run(config, list(problems), plan, name, domain, part, batch_size, None, prm_spec, value_spec,
                       model, backend, dtype, device, cache_tokens, draft, remote, prompt_template,
                       ray_address, ray_workers, save_trees)
    else:
        with run_lock(out):  # one writer per run file, from before the models load to the last record
            read_records(out, config.digest())  # refuse another config's file before loading models
            records = _run(config, list(problems), plan, name, domain, part, batch_size, out, prm_spec, value_spec,
                           model, backend, dtype, device, cache_tokens, draft, remote, prompt_template,
                           ray_address, ray_workers, save_trees)
    print_summary(records)
    if skipped:
        click.echo(f"{len(skipped)} malformed row(s) skipped (listed above)")


def _run(config: EvalConfig, problems: list[Any], plan: list[int], name: str, domain: Any, part: tuple[int, int] | None,
         batch_size: int, out: str | None, prm_spec: str, value_spec: str | None, model: str, backend: str, dtype: str,
         device: str | None, cache_tokens: int | None, draft: str | None, remote: dict[str, Any],
         prompt_template: str | None, ray_address: str | None = None, ray_workers: int | None = None,
         save_trees: bool = False) -> list[Any]:
    """Load the scorers and the engine, then run the evaluation under the progress bar (with
    ``ray_address``: on Ray workers that each load their own, :func:`worker_setup`)."""
    setup = functools.partial(worker_setup, name=name, prm_spec=prm_spec, value_spec=value_spec, model=model,
                              backend=backend, dtype=dtype, device=device, cache_tokens=cache_tokens, draft=draft,
                              remote=remote, prompt_template=prompt_template)
    if ray_address is not None:
        gpu = False if backend == "openai" or device == "cpu" else (
            True if backend == "vllm" or (device or "").startswith("cuda") else None)
        run = functools.partial(evaluate_on_ray, setup=setup, address=ray_address, workers=ray_workers, gpu=gpu,
                                save_trees=save_trees)
        return run_with_progress(None, problems, config, plan, run=run, out=out, shard=part, batch_size=batch_size)
    engine, loaded = setup(problems)
    records = run_with_progress(engine, problems, config, plan, **loaded, out=out, shard=part, batch_size=batch_size,
                                save_trees=save_trees)
    print_server_stats(engine)
    return records


def print_server_stats(engine: Any) -> None:
    """Per policy server (the ``openai`` backend with several ``--base-url``s): requests, failures,
    trees routed and moved in, and the share of prompt tokens its prefix cache already held."""
    stats = engine.server_stats() if hasattr(engine, "server_stats") else []
    if len(stats) < 2:
        return
    table = Table(title="policy servers")
    for col in ("server", "healthy", "requests", "failures", "trees moved in", "prompt tokens", "cached"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for s in stats:
        table.add_row(s["url"], "yes" if s["healthy"] else "no", str(s["requests"]), str(s["failures"]),
                      str(s["trees_moved_in"]), str(s["prompt_tokens"]), f"{s['cached_share']:.1%}")
    Console(width=max(Console().width, 110)).print(table)


def worker_setup(problems: list[Any], *, name: str, prm_spec: str, value_spec: str | None, model: str, backend: str,
                 dtype: str, device: str | None, cache_tokens: int | None, draft: str | None, remote: dict[str, Any],
                 prompt_template: str | None) -> tuple[Any, dict[str, Any]]:
    """What a run loads, here or on each Ray worker of ``reason eval --ray``: the engine, and the
    scorers, verifier, domain and prompts its evaluations take."""
    prm, value = load_scorers(prm_spec, value_spec, dtype, device, backend)
    engine = build_engine(model, backend, dtype, device, cache_tokens, draft, remote, prm)
    domain = get_domain(name)
    return engine, {"domain": domain, "verifier": verifiers.get(domain.verifier)(), "prm": prm, "value": value,
                    "prompts": suite_prompts(engine, problems, name, prompt_template)}


def suite_prompts(engine: Any, problems: list[Any], suite: str, template: str | None) -> list[Any] | None:
    """Prompts for a suite's problems (None: the arith default of the solve layer)."""
    if suite == "arith" and template is None:
        return None

    return [build_prompt(p, engine=engine, template=template, suite=suite) for p in problems]


def run_with_progress(engine: Any, problems: list[Any], config: Any, budgets: list[int], *,
                      run: Callable[..., list[Any]] | None = None, **kwargs: Any) -> list[Any]:
    """:func:`tasks.evaluation.evaluate` (or ``run``, called without the engine) under a progress bar
    with the running accuracy."""


    shard = kwargs.get("shard")
    per_budget = len([i for i in range(len(problems)) if shard is None or i % shard[1] == shard[0]])
    tally = {"n": 0, "right": 0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task(f"{config.label()}", total=per_budget * len(budgets))

        def seen(record: Any) -> None:
            tally["n"] += 1
            tally["right"] += int(record.correct)
            bar.update(task, advance=1, description=f"{config.label()} · budget {record.budget} · "
                       f"accuracy {tally['right'] / tally['n']:.3f} ({tally['n']} new)")

        if run is None:
            records = evaluate(engine, problems, config, budgets, on_record=seen, **kwargs)
        else:
            records = run(problems, config, budgets, on_record=seen, **kwargs)
        bar.update(task, completed=per_budget * len(budgets))
    return records


def print_summary(records: list[Any]) -> None:
    """Tables: per budget accuracy with its interval, votes and pass@N and compute; majority /
    weighted / pass at k = 1, 2, 4, ... for the largest budget; accuracy per level and subject."""


    console = Console(width=max(Console().width, 110))
    if not records:
        console.print("no records")
        return
    kept = unique(records)
    if len(kept) < len(records):  # e.g. two runs appended to one file before runs were locked
        click.echo(f"note: {len(records) - len(kept)} duplicate record(s) (same problem and budget) counted once", err=True)
    failed = [r for r in kept if getattr(r, "error", None)]
    for r in failed[:MAX_FAILED_SHOWN]:
        click.echo(f"failed: problem {r.id} at budget {r.budget}: {r.error} (counted as wrong)", err=True)
    if len(failed) > MAX_FAILED_SHOWN:
        click.echo(f"failed: {len(failed) - MAX_FAILED_SHOWN} more problem/budget pair(s) (see 'error' in the records)",
                   err=True)
    table = Table(title=f"reason eval: {records[0].label}")
    for col in ("budget", "problems", "accuracy", "95% CI", "maj@N", "weighted@N", "pass@N", "tokens/problem", "PRM calls/problem"):
        table.add_column(col, justify="right")
    for row in summarize(records):
        table.add_row(str(row["budget"]), str(row["problems"]), f"{row['accuracy']:.3f}",
                      f"{row['ci'][0]:.3f}-{row['ci'][1]:.3f}", f"{row['majority']:.3f}", f"{row['weighted']:.3f}",
                      f"{row['pass']:.3f}", f"{row['tokens']:.0f}", f"{row['prm_calls']:.1f}")
    console.print(table)
    top, at = max(curves(records).items())
    ks = Table(title=f"candidates subsampled (budget {top})")
    for col in ("k", "majority@k", "weighted@k", "pass@k"):
        ks.add_column(col, justify="right")
    for k, m in at.items():
        ks.add_row(str(k), f"{m['majority']:.3f}", f"{m['weighted']:.3f}", f"{m['pass']:.3f}")
    console.print(ks)
    for field in ("level", "subject"):
        parts = breakdown(records, field)
        if len({value for _, value in parts}) < 2:
            continue
        per = Table(title=f"accuracy by {field}")
        for col in ("budget", field, "problems", "accuracy", "95% CI"):
            per.add_column(col, justify="right")
        for (budget, value), row in parts.items():
            per.add_row(str(budget), str(value), str(row["problems"]), f"{row['accuracy']:.3f}",
                        f"{row['ci'][0]:.3f}-{row['ci'][1]:.3f}")
        console.print(per)
