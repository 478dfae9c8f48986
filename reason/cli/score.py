"""``reason score``: score a (partial) solution with a PRM, a value model and/or a verifier."""

from __future__ import annotations

import json
from typing import Any

import click

from reason.cli.app import friendly, main
from reason.cli.options import load_scorers, unescape
from reason.core.errors import ReasonError
from rewards import verifiers
from rewards.scoring import aggregate, split_steps


@main.command()
@click.argument("question")
@click.option("--solution", required=True, help="The (partial) solution text; \\n escapes are read.")
@click.option("--prm", "prm_spec", default=None, help="NAME[=PATH_OR_ID], e.g. arith or qwen=/path.")
@click.option("--value", "value_spec", default=None, help="NAME[=PATH_OR_ID], or 'prm' for the PRM's score.")
@click.option("--verifier", "verifier_name", default=None, help="math, aime, exact or arith.")
@click.option("--reference", default="", help="Reference answer for the verifier.")
@click.option("--delimiter", default="\\n\\n", show_default=True, help="Step delimiter of the solution.")
@click.option("--aggregation", default="last", show_default=True, help="last, min, prod, mean or model.")
@click.option("--dtype", default="auto", show_default=True)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def score(
    question: str,
    solution: str,
    prm_spec: str | None,
    value_spec: str | None,
    verifier_name: str | None,
    reference: str,
    delimiter: str,
    aggregation: str,
    dtype: str,
    device: str | None,
    as_json: bool,
) -> None:
    """Score SOLUTION to QUESTION with a PRM (per step), a value model and/or a verifier."""
    if not (prm_spec or value_spec or verifier_name):
        raise ReasonError("--prm", "no scorer given", "pass --prm, --value or --verifier")
    solution, delimiter = unescape(solution, "solution"), unescape(delimiter, "delimiter")
    out: dict[str, Any] = {}
    prm, value = load_scorers(prm_spec, value_spec, dtype, device)
    if prm is not None:
        steps = [solution.strip()] if aggregation == "model" else split_steps(solution, delimiter)
        scores = prm.score(question, steps)
        out["steps"], out["step_scores"] = steps, scores
        out["prm_score"] = aggregate(scores, aggregation)
    if value is not None:
        out["value"] = value.value(question, solution)
    if verifier_name:
        out["verifier"] = verifiers.get(verifier_name)().verify(question, solution, reference)
    if as_json:
        click.echo(json.dumps(out))
        return
    for key, val in out.items():
        click.echo(f"{key}: {val}")
