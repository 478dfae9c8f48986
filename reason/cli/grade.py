"""``reason grade``: grade predictions against a suite's reference answers."""

from __future__ import annotations

import json

import click

from reason.cli.app import friendly, main
from tasks.grading import grade_predictions


@main.command("grade")
@click.option("--suite", required=True, help="math500, aime24, aime25 or arith[:levels].")
@click.option("--predictions", required=True, type=click.Path(dir_okay=False), help="JSONL rows of {\"id\", \"prediction\"}.")
@click.option("--data", default=None, type=click.Path(), help="A local suite file in the MATH-500 schema.")
@click.option("--json", "as_json", is_flag=True, help="Print per-problem correctness as JSON lines.")
@friendly
def grade_command(suite: str, predictions: str, data: str | None, as_json: bool) -> None:
    """Grade predictions against a suite's reference answers."""


    report = grade_predictions(suite, predictions, data=data)
    for note in report.skipped:
        click.echo(f"skipped {note}", err=True)
    if as_json:
        for row in report.rows:
            click.echo(json.dumps(row))
    click.echo(f"{report.correct}/{report.graded} correct ({report.accuracy:.3f}) · {len(report.skipped)} row(s) skipped · "
               f"{report.missing} problem(s) without a prediction")
