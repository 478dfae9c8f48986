"""``reason plot``: accuracy against budget and against generated tokens, from eval run files."""

from __future__ import annotations

from pathlib import Path

import click

from reason.cli.app import friendly, main
from reason.core.errors import ReasonError


IMAGE_SUFFIXES = (".png", ".pdf", ".svg")
"""The files ``--out`` may name: the image formats the figure is written in, chosen by the suffix."""


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="accuracy.png", show_default=True, type=click.Path(dir_okay=False),
              help="Image to write: .png, .pdf or .svg.")
@click.option("--title", default=None, help="Figure title.")
@friendly
def plot_command(runs: tuple[str, ...], out: str, title: str | None) -> None:
    """Draw accuracy versus budget and versus generated tokens from eval run files."""
    from tasks.plots import plot_runs
    from tasks.suite_files import text_lines

    target = Path(out)
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise ReasonError("out", f"{out!r} is not an image file name ({', '.join(IMAGE_SUFFIXES)})",
                          f"use e.g. --out {target.stem or 'accuracy'}.png")
    if any(target.resolve() == Path(r).resolve() for r in runs):
        raise ReasonError("out", f"{out!r} is one of the run files", "write the figure to a new file")
    for run in runs:  # a run file that is not UTF-8 is named here (the record reader does not say which)
        for _ in text_lines(run, "runs"):
            pass
    path = plot_runs([Path(r) for r in runs], target, title=title)
    click.echo(str(path))
