"""``reason serve``: the OpenAI-compatible server (fastapi and uvicorn are the ``serve`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from reason.cli.app import friendly, main
from reason.cli.options import build_engine, engine_options
from reason.core.errors import ReasonError
from reason.serve.limits import (MAX_BODY_BYTES, MAX_BUDGET, MAX_BUDGET_TOKENS, MAX_CHOICES, MAX_PROMPT_CHARS,
                                 MAX_PROMPTS, ServerLimits)
from rewards.catalog import load_prm, load_value, parse_spec


def read_key_file(path: str) -> str:
    """The API key in ``path`` (surrounding whitespace dropped); a one-line error if unreadable or empty."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReasonError("api-key-file", f"cannot read {path!r} ({type(exc).__name__})",
                          "give a readable UTF-8 text file holding the key") from None
    if not key:
        raise ReasonError("api-key-file", f"{path!r} is empty", "write the key into it")
    return key


def load_scorers(prm_specs: tuple[str, ...], value_specs: tuple[str, ...]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The PRMs and value models named by ``--prm`` / ``--value`` (``NAME[=PATH]``, repeatable), loaded
    once, by name: the only ones clients may choose. No ``--prm``: None (the app's default list)."""
    loaded: dict[str, dict[str, Any]] = {"prm": {}, "value": {}}
    for field, specs in (("prm", prm_specs), ("value", value_specs)):
        names = [parse_spec(spec, field)[0] for spec in specs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ReasonError(field, f"{twice[0]!r} is given twice", f"give each --{field} NAME once")
        for name, spec in zip(names, specs):
            if field == "value" and name == "prm":
                continue  # the chosen PRM's score: always offered, nothing to load
            loaded[field][name] = load_prm(spec) if field == "prm" else load_value(spec)
    return (loaded["prm"] if prm_specs else None), loaded["value"]


@main.command()
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes it to the network).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None, help="The model name clients use (default: --model).")
@click.option("--max-tree-tokens", type=int, default=2_000_000, show_default=True,
              help="Tokens of served trees kept for prefix reuse; the least recently used trees go first.")
@click.option("--api-key-file", default=None, help="Read the API key from this file (keeps it off the command line).")
@click.option("--prm", "prm_specs", multiple=True, metavar="NAME[=PATH]",
              help="A PRM /v1/solve requests may name and /v1/rewards serves (repeatable; loaded at start; "
                   "NAME=http://HOST:PORT/v1 scores through that server). Default: arith only.")
@click.option("--value", "value_specs", multiple=True, metavar="NAME[=PATH]",
              help="A value model /v1/solve requests may name and /v1/rewards serves (repeatable; loaded at start; "
                   "'prm' is always offered to /v1/solve).")
@click.option("--max-body-bytes", type=int, default=MAX_BODY_BYTES, show_default=True,
              help="Largest request body; larger ones get 413 before parsing.")
@click.option("--max-prompt-chars", type=int, default=MAX_PROMPT_CHARS, show_default=True,
              help="Characters of one prompt, chat or question, checked before tokenizing.")
@click.option("--max-prompts", type=int, default=MAX_PROMPTS, show_default=True, help="Prompts in one completion request.")
@click.option("--max-choices", type=int, default=MAX_CHOICES, show_default=True,
              help="Choices in one completion request (prompts x n).")
@click.option("--max-budget", type=int, default=MAX_BUDGET, show_default=True, help="Largest /v1/solve budget.")
@click.option("--max-budget-tokens", type=int, default=MAX_BUDGET_TOKENS, show_default=True,
              help="Largest /v1/solve budget_tokens.")
@friendly
def serve(model: str, backend: str, dtype: str, device: str | None, cache_tokens: int | None, draft: str | None,
          remote: dict[str, Any], host: str, port: int, served_model_name: str | None, max_tree_tokens: int,
          api_key_file: str | None, prm_specs: tuple[str, ...], value_specs: tuple[str, ...], max_body_bytes: int,
          max_prompt_chars: int, max_prompts: int, max_choices: int, max_budget: int, max_budget_tokens: int) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (plus /v1/solve for whole searches).

    --api-key-file PATH, REASON_API_KEY or --api-key makes every /v1 request need 'Authorization:
    Bearer KEY' and turns /docs and /openapi.json off. Without --cache-tokens the KV cache is bounded
    to 65536 tokens. Request sizes are capped (the --max-* options; see docs/limits.md)."""
    try:
        import uvicorn

        from reason.serve import create_app
    except ImportError:
        raise ReasonError("serve", "needs fastapi and uvicorn", "pip install 'reason[serve]'") from None

    if backend != "hf":
        raise ReasonError("engine", f"reason serve runs the in-process engine (got {backend!r})", "use --engine hf")
    if remote.get("base_url"):
        raise ReasonError("base-url", "is for clients", "drop it; use --host/--port to choose where to listen")
    if not 0 < port < 65536:
        raise ReasonError("port", f"must be 1..65535 (got {port})", "pick a free port")
    api_key = remote.get("api_key")
    if api_key_file is not None:
        if api_key:
            raise ReasonError("api-key-file", "and --api-key (or REASON_API_KEY) both give a key", "give it one way")
        api_key = read_key_file(api_key_file)
    limits = ServerLimits(body_bytes=max_body_bytes, prompt_chars=max_prompt_chars, prompts=max_prompts,
                          choices=max_choices, budget=max_budget, budget_tokens=max_budget_tokens)
    prms, values = load_scorers(prm_specs, value_specs)
    engine = build_engine(model, backend, dtype, device, cache_tokens or 65536, draft)
    app = create_app(engine, model_name=served_model_name or model, api_key=api_key,
                     max_tree_tokens=max_tree_tokens, limits=limits, prms=prms, values=values)
    click.echo(f"serving {served_model_name or model} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
