"""``reason plot``: accuracy against budget and against generated tokens, from eval run files."""

from __future__ import annotations

from pathlib import Path

import click

from reason.cli.app import friendly, main


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default="accuracy.png", show_default=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--title", default=None, help="Figure title.")
@friendly
def plot_command(runs: tuple[str, ...], out: str, title: str | None) -> None:
    """Draw accuracy versus budget and versus generated tokens from eval run files."""
    from tasks.plots import plot_runs

    path = plot_runs([Path(r) for r in runs], Path(out), title=title)
    click.echo(str(path))
