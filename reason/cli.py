"""The ``reason`` command line. Every command takes ``--json`` for machine-readable output; bad
input prints one line naming the field and exits with status 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from reason.errors import ReasonError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`ReasonError` (and a missing file) into a one-line message and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReasonError as exc:
            _fail(str(exc))
        except FileNotFoundError as exc:
            _fail(f"{exc.filename}: no such file; check the path")

    return wrapper


@click.group()
@click.version_option(package_name="reason")
def main() -> None:
    """Search-based reasoning and test-time scaling on one shared prefix-caching tree."""


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that loads a policy model."""
    options = [
        click.option("--model", "-m", default="arith", show_default=True, help="'arith' (bundled), a checkpoint dir or a hub id."),
        click.option("--engine", "backend", default="hf", show_default=True,
                     help="Engine backend: hf (in process) or openai (an OpenAI-compatible server, see --base-url)."),
        click.option("--base-url", default=None, help="With --engine openai: the server, e.g. http://127.0.0.1:8000/v1."),
        click.option("--api-key", default=None, envvar="REASON_API_KEY", help="With --engine openai: the server's key [env REASON_API_KEY]."),
        click.option("--dtype", default="auto", show_default=True, help="float32, bfloat16, float16 or auto."),
        click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)."),
        click.option("--cache-tokens", type=int, default=None, help="KV cache budget in tokens (default: unbounded)."),
        click.option("--draft", "draft", is_flag=False, flag_value="spine", default=None,
                     help="Speculative tree drafting (lossless): --draft for the default 'spine' drafter, or --draft suffix|recycle|spine."),
        click.option("--no-draft", "no_draft", is_flag=True, help="No drafting (the default)."),
    ]

    @wraps(fn)
    def wrapper(*args: Any, no_draft: bool = False, base_url: str | None = None, api_key: str | None = None,
                **kwargs: Any) -> Any:
        if no_draft:
            kwargs["draft"] = None
        kwargs["remote"] = {"base_url": base_url, "api_key": api_key}
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; a value is read as JSON when it parses (numbers, lists, true),
    else kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ReasonError("option", f"{pair!r} is not KEY=VALUE", "write e.g. -o segment_tokens=16")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def load_scorers(prm_spec: str | None, value_spec: str | None, dtype: str, device: str | None) -> tuple[Any, Any]:
    """The PRM and value model named on the command line (None for 'none' or no name)."""
    from rewards.catalog import load_prm, load_value

    hf_options = {"dtype": dtype, "device": device}
    plain = prm_spec is not None and prm_spec.split("=")[0] == "arith"  # no checkpoint: no dtype/device
    prm = None if prm_spec in (None, "", "none") else load_prm(prm_spec, **({} if plain else hf_options))
    value = None
    if value_spec:
        value = load_value(value_spec, prm=prm) if value_spec == "prm" else load_value(value_spec, **hf_options)
    return prm, value


def build_engine(model: str, backend: str, dtype: str, device: str | None, cache_tokens: int | None,
                 draft: str | None = None, remote: dict[str, Any] | None = None):
    """Resolve the model name and load the engine (``remote``: ``base_url`` / ``api_key`` for the
    ``openai`` backend, whose ``model`` only names the tokenizer)."""
    from reason.engine import load_engine
    from reason.models import resolve_model

    remote = {k: v for k, v in (remote or {}).items() if v is not None}
    if backend == "openai":
        if "base_url" not in remote:
            raise ReasonError("base-url", "is required with --engine openai", "pass e.g. --base-url http://127.0.0.1:8000/v1")
        if draft is not None or cache_tokens is not None:
            raise ReasonError("draft" if draft is not None else "cache-tokens", "applies to the in-process engine only",
                              "set it on the server (reason serve takes it)")
        return load_engine(resolve_model(model), backend, **remote)
    if remote:
        raise ReasonError(next(iter(remote)).replace("_", "-"), "applies to --engine openai only", "drop it or add --engine openai")
    options: dict[str, Any] = {"dtype": dtype, "device": device}
    if cache_tokens is not None:
        options["cache_tokens"] = cache_tokens
    if draft is not None:
        options["draft"] = draft
    return load_engine(resolve_model(model), backend, **options)


@main.command()
@click.argument("prompt")
@engine_options
@click.option("-n", "n", type=int, default=1, show_default=True, help="Number of completions.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True, help="0 turns it off.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True, help="Cap on each completion's tokens.")
@click.option("--stop", "stops", multiple=True, help="Stop string (repeatable); kept at the end of the text.")
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
    top_p: float,
    top_k: int,
    seed: int,
    max_tokens: int,
    stops: tuple[str, ...],
    chat: bool | None,
    as_json: bool,
) -> None:
    """Sample N completions of PROMPT."""
    from reason.engine.base import Sampling, Stop
    from reason.generate import generate as run_generate

    if not prompt:
        raise ReasonError("PROMPT", "is empty", "give the text to continue")
    if n < 1:
        raise ReasonError("-n", f"must be at least 1 (got {n})", "ask for one or more completions")
    sampling = Sampling.make(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    stop = Stop.make(strings=tuple(s.encode().decode("unicode_escape") for s in stops), max_tokens=max_tokens)
    engine = build_engine(model, backend, dtype, device, cache_tokens, draft, remote)
    if chat is None:
        chat = bool(getattr(getattr(engine, "tokenizer", None), "chat_template", None))
    result = run_generate(engine, [{"role": "user", "content": prompt}] if chat else prompt, n=n, sampling=sampling, stop=stop)
    if as_json:
        data = result.model_dump(mode="json")
        for s in data["samples"]:
            s.pop("logprobs")
        click.echo(json.dumps(data))
        return
    from rich.console import Console
    from rich.table import Table

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


@main.command()
@click.argument("problem")
@click.option("--strategy", "-s", default="best_of_n", show_default=True, help="Search strategy.")
@click.option("--budget", "-b", type=int, default=16, show_default=True, help="Full-solution equivalents.")
@engine_options
@click.option("--suite", default="arith", show_default=True, help="The problem's domain (prompt, step delimiter, answers).")
@click.option("--prm", "prm_spec", default="arith", show_default=True, help="NAME[=PATH_OR_ID], or 'none'.")
@click.option("--value", "value_spec", default=None, help="NAME[=PATH_OR_ID] of a value model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", "-t", type=float, default=0.8, show_default=True)
@click.option("--select", default=None, help="How the answer is chosen: best_of_n prm|majority|weighted (default prm); particle weight|vote.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A strategy option, e.g. -o segment_tokens=16 -o policy=low_prob (values read as JSON when they parse).")
@click.option("--show-tree", is_flag=True, help="Draw the search tree.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the tree when --show-tree).")
@friendly
def solve(
    problem: str,
    strategy: str,
    budget: int,
    model: str,
    backend: str,
    dtype: str,
    device: str | None,
    cache_tokens: int | None,
    draft: str | None,
    remote: dict[str, Any],
    suite: str,
    prm_spec: str,
    value_spec: str | None,
    seed: int,
    temperature: float,
    select: str | None,
    options: tuple[str, ...],
    show_tree: bool,
    as_json: bool,
) -> None:
    """Solve PROBLEM with a search strategy and print the answer."""
    from search import strategies
    from search.solve import check_options, make_budget
    from search.solve import solve as run_solve

    if not problem.strip():
        raise ReasonError("PROBLEM", "is empty", "give the problem text")
    strategies.get(strategy)
    extra = parse_options(options)
    check_options(strategy, extra)
    make_budget(budget)
    from tasks.domains import domains

    domains.get(suite).make_problem(problem)  # a malformed problem fails before any model loads
    prm, value = load_scorers(prm_spec, value_spec, dtype, device)
    engine = build_engine(model, backend, dtype, device, cache_tokens, draft, remote)
    if select:
        extra["select"] = select
    result = run_solve(engine, problem, strategy=strategy, budget=budget, suite=suite, prm=prm, value=value, seed=seed,
                       temperature=temperature, **extra)
    if as_json:
        click.echo(json.dumps(result.to_json_dict(include_tree=show_tree)))
        return
    from rich.console import Console

    console = Console()
    console.print(f"[bold]answer:[/bold] {result.answer}")
    console.print(result.text)
    if show_tree:
        console.print(_render_tree(result.tree))
    led = result.ledger
    console.print(f"{len(result.candidates)} candidate(s) · generated {led.generated_tokens} · prefill {led.prefill_tokens} · "
                  f"PRM calls {led.prm_calls} · {led.wall_seconds:.2f}s")


def _render_tree(tree: Any):
    """A rich Tree of the search tree: each node's text (one line) with its finish reason and scores."""
    from rich.tree import Tree as RichTree

    def label(node: Any) -> str:
        text = node.text.strip().replace("\n", " | ") or "(prompt)"
        scores = " ".join(f"{k}={v:.2f}" for k, v in node.scores.items())
        return f"[{node.id}] {text[:80]}" + (f"  ({node.finish_reason})" if node.finish_reason else "") + (f"  {scores}" if scores else "")

    root = RichTree(label(tree.root))
    stack = [(tree.root, root)]
    while stack:
        node, branch = stack.pop()
        for child in node.children:
            sub = branch.add(label(child))
            stack.append((child, sub))
    return root


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape")


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
    from rewards import verifiers
    from rewards.scoring import aggregate, split_steps

    if not (prm_spec or value_spec or verifier_name):
        raise ReasonError("--prm", "no scorer given", "pass --prm, --value or --verifier")
    solution, delimiter = _unescape(solution), _unescape(delimiter)
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


@main.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--arch", default="llama", show_default=True, help="llama, qwen2, mistral or qwen3.")
@click.option("--seed", type=int, default=0, show_default=True)
@friendly
def tiny_model(out_dir: str, arch: str, seed: int) -> None:
    """Write a tiny random checkpoint (and tokenizer) of a real architecture to OUT_DIR, offline."""
    from reason.tiny import save_tiny_checkpoint

    path = save_tiny_checkpoint(out_dir, arch=arch, seed=seed)
    click.echo(str(path))


from reason import cli_eval  # noqa: F401  (registers eval and plot on main)

if __name__ == "__main__":
    main()
