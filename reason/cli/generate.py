"""``reason generate``: sample N completions of a prompt."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from reason.cli.app import friendly, main
from reason.cli.options import (MAX_COMPLETIONS, build_engine, check_count, check_sampling, check_stop, engine_options,
                                sampling_options, unescape)
from reason.core.errors import ReasonError
from reason.shortcuts import generate as run_generate


@main.command()
@click.argument("prompt")
@engine_options
@click.option("-n", "n", type=int, default=1, show_default=True, help=f"Number of completions (at most {MAX_COMPLETIONS}).")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="0 is greedy.")
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Cap on each completion's tokens.")
@click.option("--min-tokens", type=int, default=0, show_default=True, help="No EOS or stop before this many tokens.")
@click.option("--stop", "stops", multiple=True, help="Stop string (repeatable; \\n escapes are read); kept at the end of the text.")
@click.option("--chat/--no-chat", default=None, help="Wrap the prompt as a user message in the chat template (default: when the tokenizer has one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def generate(
    prompt: str,
    model: str,
    backend: str,
    dtype: str,
    device: str | None,
    cache_tokens: int | None,
    draft: str | None,
    remote: dict[str, Any],
    n: int,
    temperature: float,
    sampling_fields: dict[str, Any],
    seed: int,
    max_tokens: int,
    min_tokens: int,
    stops: tuple[str, ...],
    chat: bool | None,
    as_json: bool,
) -> None:
    """Sample N completions of PROMPT."""
    if not prompt:
        raise ReasonError("PROMPT", "is empty", "give the text to continue")
    check_count("-n", n, MAX_COMPLETIONS, "completions")
    sampling = check_sampling(temperature=temperature, seed=seed, **sampling_fields)
    stop = check_stop(strings=tuple(unescape(s, "stop") for s in stops), max_tokens=max_tokens, min_tokens=min_tokens)
    engine = build_engine(model, backend, dtype, device, cache_tokens, draft, remote)
    if chat is None:
        chat = engine.has_chat_template()
    result = run_generate(engine, [{"role": "user", "content": prompt}] if chat else prompt, n=n, sampling=sampling, stop=stop)
    if as_json:
        data = result.model_dump(mode="json")
        for s in data["samples"]:
            s.pop("logprobs")
        click.echo(json.dumps(data))
        return

    console = Console()
    table = Table(title=f"{n} completion(s)", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("tokens", justify="right")
    table.add_column("finish")
    for i, s in enumerate(result.samples):
        table.add_row(str(i), s.text, str(len(s.token_ids)), str(s.finish_reason))
    console.print(table)
    led = result.ledger
    console.print(
        f"prompt {led.prompt_tokens} · prefill {led.prefill_tokens} · generated {led.generated_tokens} · "
        f"forwards {led.forward_passes} · {led.wall_seconds:.2f}s"
    )
