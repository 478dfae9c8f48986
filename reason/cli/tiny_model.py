"""``reason tiny-model``: a tiny random checkpoint of a real architecture, offline."""

from __future__ import annotations

import click

from reason.cli.app import friendly, main
from reason.core.tiny import save_tiny_checkpoint


@main.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--arch", default="llama", show_default=True, help="llama, qwen2, mistral or qwen3.")
@click.option("--seed", type=int, default=0, show_default=True)
@friendly
def tiny_model(out_dir: str, arch: str, seed: int) -> None:
    """Write a tiny random checkpoint (and tokenizer) of a real architecture to OUT_DIR, offline."""
    path = save_tiny_checkpoint(out_dir, arch=arch, seed=seed)
    click.echo(str(path))
