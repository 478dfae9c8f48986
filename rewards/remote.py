"""PRMs and value models over HTTP: ``--prm NAME=http://HOST:PORT/v1`` (and ``--value``).

:func:`connect_prm` asks the server what it is. A ``reason serve`` lists its scorers at
``GET /v1/rewards``; its PRM is then a :class:`ServedPRM` that sends ``(question, steps)`` items to
``POST /v1/rewards`` and gets the step scores the server's in-process PRM computes (the same
numbers, so searches behave the same; the server gathers concurrent requests into one model
call). Any other server is taken for a ``vllm serve`` of a PRM: items are formatted here, sent to
vLLM's ``POST /pooling`` as token ids, and the step rows read back (:mod:`rewards.prm.pooling`).

Both are :class:`~rewards.base.ProcessRewardModel` objects, so :class:`~rewards.scoring.NodeScorer`
caches their scores per node as it does for an in-process PRM: a node's steps go over the wire once.
Requests carry ``Authorization: Bearer`` with ``api_key`` (default: ``REASON_API_KEY``), time out
after ``timeout`` seconds, and connection failures, timeouts, 429 and 5xx answers are retried with
exponential backoff.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from reason.core.engine.openai import RETRY_STATUS
from reason.core.engine.openai import _message as error_message
from reason.core.errors import ReasonError
from rewards.base import ProcessRewardModel, StepScores, ValueModel, Values
from rewards.prm.pooling import PoolingPRM, formatter

def is_url(path: str | None) -> bool:
    """Whether a spec's ``PATH`` is a server address rather than a checkpoint."""
    return bool(path) and str(path).startswith(("http://", "https://"))


class ScorerClient:
    """JSON over HTTP to one scoring server (``base_url`` ends in ``/v1``; ``root`` is without it).

    ``requests`` counts the POSTs sent."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 4,
                 backoff: float = 0.5) -> None:
        try:
            import httpx
        except ImportError:
            raise ReasonError("prm", "a scorer over HTTP needs httpx", "pip install 'reason[openai]'") from None
        if not is_url(base_url):
            raise ReasonError("prm", f"{base_url!r} is not an http(s) URL", "give e.g. http://127.0.0.1:8000/v1")
        root = base_url.rstrip("/").removesuffix("/v1")
        self.root, self.base_url = root, root + "/v1"
        self.retries, self.backoff = retries, backoff
        key = api_key if api_key is not None else os.environ.get("REASON_API_KEY")
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {})
        self.requests = 0

    def call(self, method: str, url: str, body: dict[str, Any] | None = None, *, missing_ok: bool = False) -> Any:
        """The JSON answer of one request, retried on transient failures; with ``missing_ok`` a 404
        is None."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as exc:
                last = type(exc).__name__
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code >= 400:
                raise ReasonError("prm", f"{url} answered {response.status_code}: {error_message(response)}",
                                  "pass the server's key (REASON_API_KEY)" if response.status_code == 401
                                  else "check the scorer's name and the server's URL")
            return response.json()
        raise ReasonError("prm", f"{url} failed after {self.retries + 1} attempts ({last})",
                          "check that the scoring server is running and reachable")

    def post(self, path: str, body: dict[str, Any], *, root: bool = False) -> Any:
        """POST ``body`` to ``path`` under ``/v1`` (or under the server's root)."""
        self.requests += 1
        return self.call("POST", (self.root if root else self.base_url) + path, body)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class ServedPRM(ProcessRewardModel):
    """PRM ``name`` of a ``reason serve`` (see the module docstring); ``incremental`` is the served
    PRM's, ``max_items`` the server's cap on items per request."""

    def __init__(self, client: ScorerClient, name: str, *, incremental: bool = True, max_items: int = 64) -> None:
        self.client, self.name, self.incremental, self.max_items = client, name, incremental, max_items

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        scores: list[list[float]] = []
        tokens = 0
        for chunk in _chunks(items, self.max_items):
            body = {"model": self.name, "task": "prm",
                    "items": [{"question": q, "steps": list(steps)} for q, steps in chunk]}
            answer = self.client.post("/rewards", body)
            scores += [[float(x) for x in row["scores"]] for row in sorted(answer["data"], key=lambda r: r["index"])]
            tokens += int(answer.get("usage", {}).get("prompt_tokens", 0))
        return StepScores(scores, tokens)


class ServedValue(ValueModel):
    """Value model ``name`` of a ``reason serve``: ``(question, partial)`` items to ``POST /v1/rewards``."""

    def __init__(self, client: ScorerClient, name: str, *, max_items: int = 64) -> None:
        self.client, self.name, self.max_items = client, name, max_items

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        values: list[float] = []
        tokens = 0
        for chunk in _chunks(items, self.max_items):
            body = {"model": self.name, "task": "value", "items": [{"question": q, "partial": p} for q, p in chunk]}
            answer = self.client.post("/rewards", body)
            values += [float(row["value"]) for row in sorted(answer["data"], key=lambda r: r["index"])]
            tokens += int(answer.get("usage", {}).get("prompt_tokens", 0))
        return Values(values, tokens)


def _listing(client: ScorerClient) -> dict[str, Any] | None:
    """A ``reason serve``'s scorer list, or None from a server without one (vLLM)."""
    return client.call("GET", client.base_url + "/rewards", missing_ok=True)


def _entry(listing: dict[str, Any], name: str, task: str, url: str) -> dict[str, Any]:
    entries = [e for e in listing.get("data", []) if e.get("task") == task]
    entry = next((e for e in entries if e.get("id") == name), None)
    if entry is None:
        offered = ", ".join(sorted(e.get("id", "?") for e in entries)) or "none"
        raise ReasonError(task, f"the server at {url} offers no {task} {name!r} (it offers: {offered})",
                          f"name one it offers, or start it with reason serve --{task} {name}")
    return entry


def connect_prm(name: str, url: str, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 4,
                tokenizer: str | None = None, model: str | None = None, **options: Any) -> ProcessRewardModel:
    """PRM ``name`` behind ``url``: a :class:`ServedPRM` from a ``reason serve``, else a
    :class:`~rewards.prm.pooling.PoolingPRM` over vLLM's ``/pooling`` (``model``: the served model,
    default the first ``/v1/models`` lists; ``tokenizer``: where the PRM's tokenizer loads from,
    default that model's name)."""
    client = ScorerClient(url, api_key=api_key, timeout=timeout, retries=retries)
    listing = _listing(client)
    if listing is not None:
        entry = _entry(listing, name, "prm", url)
        return ServedPRM(client, name, incremental=bool(entry.get("incremental", True)),
                         max_items=int(listing.get("max_items", 64)))
    if model is None:
        listed = (client.call("GET", client.base_url + "/models") or {}).get("data") or []
        if not listed:
            raise ReasonError("prm", f"the server at {url} lists no models", "check the URL of the vllm serve")
        model = str(listed[0]["id"])
    served = model

    def pool(batch: list[list[int]]) -> list[Any]:
        answer = client.post("/pooling", {"model": served, "input": batch, "task": "token_classify",
                                          "use_activation": True, "add_special_tokens": False}, root=True)
        return [row["data"] for row in sorted(answer["data"], key=lambda r: r["index"])]

    return PoolingPRM(name, formatter(name, tokenizer or served, **options), pool)


def connect_value(name: str, url: str, *, api_key: str | None = None, timeout: float = 300.0,
                  retries: int = 4) -> ValueModel:
    """Value model ``name`` of the ``reason serve`` at ``url``."""
    client = ScorerClient(url, api_key=api_key, timeout=timeout, retries=retries)
    listing = _listing(client)
    if listing is None:
        raise ReasonError("value", f"the server at {url} serves no value models (no /v1/rewards)",
                          "point --value at a reason serve started with --value NAME")
    _entry(listing, name, "value", url)
    return ServedValue(client, name, max_items=int(listing.get("max_items", 64)))
