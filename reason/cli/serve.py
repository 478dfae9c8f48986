"""``reason serve``: the OpenAI-compatible server (fastapi and uvicorn are the ``serve`` extra)."""

from __future__ import annotations

from typing import Any

import click

from reason.cli.app import friendly, main
from reason.cli.options import build_engine, engine_options
from reason.core.errors import ReasonError


@main.command()
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes it to the network).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None, help="The model name clients use (default: --model).")
@click.option("--max-tree-tokens", type=int, default=2_000_000, show_default=True,
              help="Tokens of served trees kept for prefix reuse; the least recently used trees go first.")
@friendly
def serve(model: str, backend: str, dtype: str, device: str | None, cache_tokens: int | None, draft: str | None,
          remote: dict[str, Any], host: str, port: int, served_model_name: str | None, max_tree_tokens: int) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (plus /v1/solve for whole searches).

    --api-key (or REASON_API_KEY) makes every /v1 request need 'Authorization: Bearer KEY'. Without
    --cache-tokens the KV cache is bounded to 65536 tokens."""
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
    engine = build_engine(model, backend, dtype, device, cache_tokens or 65536, draft)
    app = create_app(engine, model_name=served_model_name or model, api_key=remote.get("api_key"),
                     max_tree_tokens=max_tree_tokens)
    click.echo(f"serving {served_model_name or model} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
