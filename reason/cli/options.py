"""Options and loaders shared by the commands that load a policy model or scorers."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from pydantic import ValidationError

from reason.core.engine import load_engine
from reason.core.engine.base import RUN_FIELDS, Sampling, Stop
from reason.core.engine.hf.loader import resolve_device
from reason.core.errors import ReasonError, from_validation_error
from rewards.catalog import load_prm, load_value
from tasks.registry import resolve_model

MAX_COMPLETIONS = 4096
"""``reason generate -n``: completions of one prompt (each holds its tokens and a node of the tree;
100,000,000 took 5.7 GB before the first token). The library's ``generate`` has no cap."""

MAX_BUDGET = 4096
"""``--budget`` of ``reason solve`` (and ``reason eval``'s budgets): solution-equivalents per problem,
the same default cap as ``reason serve --max-budget``. The library's ``solve`` has no cap."""


def check_count(field: str, value: int, cap: int, what: str) -> int:
    """``value`` when ``1 <= value <= cap``, else a one-line :class:`ReasonError` naming ``field``
    (``what`` says what is counted, e.g. "completions")."""
    if value < 1:
        raise ReasonError(field, f"must be at least 1 (got {value})", f"ask for one or more {what}")
    if value > cap:
        raise ReasonError(field, f"{value} {what} are over the command line's limit of {cap}",
                          f"ask for at most {cap} (see docs/limits.md)")
    return value


def check_sampling(prefix: str = "sampling", **values: Any) -> Sampling:
    """``values`` as a :class:`Sampling`, checked before any model loads: a one-line
    :class:`ReasonError` naming the field (``sampling.temperature``, or ``temperature`` with
    ``prefix=""``) for a value that is not finite or out of range."""
    try:
        return Sampling(**values)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix) from None


def check_stop(**values: Any) -> Stop:
    """``values`` as a :class:`Stop` (see :meth:`Stop.make`), checked before any model loads."""
    return Stop.make(**values)


def unescape(text: str, field: str) -> str:
    """``text`` with backslash escapes (``\\n``, ``\\t``, ``\\x41``, ``\\u00e9``) read and any
    other character kept as it is; a broken escape is a one-line :class:`ReasonError` naming ``field``."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise ReasonError(field, f"bad escape in {text[max(0, exc.start - 5):exc.end + 5]!r} ({exc.reason})",
                          "write \\\\ for a backslash, or a complete escape such as \\n or \\x41") from None


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that loads a policy model."""
    options = [
        click.option("--model", "-m", default="arith", show_default=True, help="'arith' (bundled), a checkpoint dir or a hub id."),
        click.option("--engine", "backend", default="hf", show_default=True,
                     help="Engine backend: hf (in process) or openai (an OpenAI-compatible server, see --base-url)."),
        click.option("--base-url", default=None, help="With --engine openai: the server, e.g. http://127.0.0.1:8000/v1; several servers of one "
                     "model comma-separated or @FILE (one URL a line): each tree goes to one server (tree-affine)."),
        click.option("--api-key", default=None, envvar="REASON_API_KEY", help="With --engine openai: the server's key [env REASON_API_KEY]."),
        click.option("--dtype", default="auto", show_default=True, help="float32, bfloat16, float16 or auto."),
        click.option("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present)."),
        click.option("--cache-tokens", type=int, default=None, help="KV cache budget in tokens (default: unbounded)."),
        click.option("--draft", "draft", is_flag=False, flag_value="suffix", default=None,
                     help="Speculative tree drafting with the hf engine (lossless; each step drafts where drafting measured "
                          "faster): --draft for the default 'suffix' drafter, or --draft suffix|spine|recycle."),
        click.option("--no-draft", "no_draft", is_flag=True, help="No drafting (the default)."),
    ]

    @wraps(fn)
    def wrapper(*args: Any, no_draft: bool = False, base_url: str | None = None, api_key: str | None = None,
                **kwargs: Any) -> Any:
        if no_draft:
            kwargs["draft"] = False
        kwargs["remote"] = {"base_url": base_url, "api_key": api_key}
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def sampling_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The sampling filters and penalties as flags (``--top-p``, ``--top-k``, ``--min-p``,
    ``--repetition-penalty``, ``--presence-penalty``, ``--frequency-penalty``; each off by
    default: :data:`~reason.core.engine.base.RUN_FIELDS`), handed to the command as one
    ``sampling_fields`` dict of the ones set (the command checks them with :func:`check_sampling`,
    inside its one-line error handling)."""
    options = [
        click.option("--top-p", type=float, default=1.0, show_default=True, help="Keep the most likely tokens up to this mass (after top-k)."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Keep the k most likely tokens (0 turns it off)."),
        click.option("--min-p", type=float, default=0.0, show_default=True,
                     help="Drop tokens under this share of the top token's probability (0 turns it off)."),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
                     help="vLLM's: divide (positive) or multiply (negative) the logits of tokens already in the prompt or output (1 is off)."),
        click.option("--presence-penalty", type=float, default=0.0, show_default=True,
                     help="Subtracted once from tokens already output (-2..2)."),
        click.option("--frequency-penalty", type=float, default=0.0, show_default=True,
                     help="Subtracted per occurrence in the output (-2..2)."),
    ]

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in RUN_FIELDS}
        kwargs["sampling_fields"] = {name: v for name, v in values.items() if v != Sampling.model_fields[name].default}
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
        except (ValueError, RecursionError):  # an integer past Python's digit limit, or nesting too deep
            raise ReasonError(key.strip(), f"the value {raw[:40]!r}... cannot be read", "give a shorter value") from None
        if key.strip() in out:
            raise ReasonError("option", f"{key.strip()!r} is given twice", "give each -o KEY once")
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def load_scorers(prm_spec: str | None, value_spec: str | None, dtype: str, device: str | None,
                 backend: str = "hf") -> tuple[Any, Any]:
    """The PRM and value model named on the command line (None for 'none' or no name); with
    ``backend="vllm"`` a PRM vLLM serves (qwen) runs on vLLM too."""
    if device is not None:
        resolve_device(device)  # an unusable device is refused before any model loads
    hf_options = {"dtype": dtype, "device": device}
    plain = prm_spec is not None and prm_spec.split("=")[0] == "arith"  # no checkpoint: no dtype/device
    prm = None if prm_spec in (None, "", "none") else load_prm(prm_spec, backend=backend, **({} if plain else hf_options))
    value = None
    if value_spec:
        value = load_value(value_spec, prm=prm) if value_spec == "prm" else load_value(value_spec, **hf_options)
    return prm, value


def build_engine(model: str, backend: str, dtype: str, device: str | None, cache_tokens: int | None,
                 draft: str | bool | None = None, remote: dict[str, Any] | None = None, prm: Any = None):
    """Resolve the model name and load the engine (``remote``: ``base_url`` / ``api_key`` for the
    ``openai`` backend, whose ``model`` only names the tokenizer). A ``vllm`` engine beside a PRM on
    vLLM in this process (``prm.gpu_share``) leaves it that share of the GPU's memory."""
    remote = {k: v for k, v in (remote or {}).items() if v is not None}
    if backend == "openai":
        if "base_url" not in remote:
            raise ReasonError("base-url", "is required with --engine openai", "pass e.g. --base-url http://127.0.0.1:8000/v1")
        if draft or cache_tokens is not None:
            raise ReasonError("draft" if draft else "cache-tokens", "applies to the in-process engine only",
                              "set it on the server (reason serve takes it)")
        return load_engine(resolve_model(model), backend, **remote)
    if remote:
        raise ReasonError(next(iter(remote)).replace("_", "-"), "applies to --engine openai only", "drop it or add --engine openai")
    if device is not None and backend == "hf":
        resolve_device(device)  # an unusable device is refused before the model loads
    options: dict[str, Any] = {"dtype": dtype, "device": device}
    if cache_tokens is not None:
        options["cache_tokens"] = cache_tokens
    if draft is not None and backend == "hf":
        options["draft"] = draft
    elif draft:
        raise ReasonError("draft", f"applies to the hf engine only (not {backend})", "drop --draft")
    if backend == "vllm" and getattr(prm, "gpu_share", 0.0):
        options["gpu_memory_utilization"] = round(0.9 - prm.gpu_share, 2)
    return load_engine(resolve_model(model), backend, **options)
