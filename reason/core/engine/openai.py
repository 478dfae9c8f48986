"""The ``openai`` backend: expansion through an OpenAI-compatible completions server.

Any server that takes token-id prompts and returns token ids works: vLLM's ``vllm serve``, SGLang,
``reason serve``. Each expansion is one ``/v1/completions`` call whose prompt is the token ids of
the whole path (so the server's prefix cache hits exactly, with no re-tokenisation drift), with
``n`` children, the request's seed and its stop conditions; children come back as token ids with
their logprobs. Which logprobs: a server's ``token_logprobs`` are the model's own unless it runs
with vLLM's ``--logprobs-mode processed_logprobs`` (say so with ``logprobs_mode=``), when they are the
sampling distribution's; ``reason serve`` reports both, the latter as an extra ``sampling_logprobs``
list beside ``token_logprobs``. Several servers of the same model (``base_url`` a list, a
comma-separated string or ``@FILE``) share the work with tree-affine routing
(:mod:`reason.core.engine.routing`): each tree's expansions go to one server, so its prefix cache
holds the tree; a server that stops answering is taken out, its trees move on (their next expansion
re-sends the whole path) and it is probed back in.

Requests run in a bounded pool of threads (``max_concurrency``) with a timeout each; connection
failures, timeouts, 429 and 5xx answers are retried with exponential backoff, and a server that
cannot serve token ids is reported as such.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from reason.core.engine.base import Engine, ExpandRequest, Outcome, Sampling
from reason.core.engine.hf.loader import checkpoint_name
from reason.core.engine.outputs import (
    Sampled,
    add_children,
    check_server_logprobs,
    finish_reason,
    max_new_tokens,
    request_ids,
)
from reason.core.engine.routing import (
    Routing,
    ServerPool,
    parse_base_urls,
    wait_backoff,
)
from reason.core.engine.text import decode, tokenize_prompt
from reason.core.errors import ReasonError
from reason.core.tree import Node

RETRY_STATUS = {408, 429, 500, 502, 503, 504}

EXTENSIONS_OFF = {name: Sampling.model_fields[name].default
                  for name in ("min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")}
"""vLLM's sampling extensions in :class:`~reason.core.engine.base.Sampling`, at their off values: a
request sends only those that are on, so a server without them sees no unknown field by default."""


@dataclass
class _Call:
    ticket: int
    request: ExpandRequest
    ids: list[int]
    node_ids: list[int]


class OpenAIEngine(Engine):
    """Expansion through an OpenAI-compatible server (see the module docstring).

    Parameters:
        base_url: the server's root, e.g. ``http://127.0.0.1:8000`` (``/v1`` is added if missing);
            several servers of one model: a list, a comma-separated string or ``@FILE``.
        tokenizer: the served model's tokenizer (prompts are tokenized here and sent as ids).
        model: the served model's name; default: the first one ``/v1/models`` lists.
        api_key: sent as ``Authorization: Bearer``.
        max_context: the model's context length; default: ``max_model_len`` from ``/v1/models``.
        max_concurrency: most requests in flight at once.
        timeout: seconds per HTTP request.
        retries: further attempts after a failed one, waiting ``backoff * 2**k`` seconds.
        logprobs_mode: what the server's ``token_logprobs`` are, by vLLM's ``--logprobs-mode`` names:
            ``"raw_logprobs"`` (the model's own; vLLM's default and ``reason serve``'s) or
            ``"processed_logprobs"`` (the sampling distribution's).
        routing: with several servers, ``"tree"`` (tree-affine, the default) or ``"round_robin"``.
        probe_interval: seconds between probes of a server taken out.
    """

    name = "openai"

    def __init__(self, base_url: str | Sequence[str], tokenizer: Any, *, model: str | None = None,
                 api_key: str | None = None, max_context: int | None = None, max_concurrency: int = 64,
                 timeout: float = 300.0, retries: int = 4, backoff: float = 0.5, logprobs_mode: str = "raw_logprobs",
                 routing: Routing = "tree", probe_interval: float = 1.0) -> None:
        try:
            import httpx
        except ImportError:
            raise ReasonError("engine", "the openai backend needs httpx", "pip install 'reason[openai]'") from None

        super().__init__()
        self.base_urls = parse_base_urls(base_url)
        self.servers = ServerPool(self.base_urls, routing)
        self.probe_interval = probe_interval
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        if max_concurrency < 1:
            raise ReasonError("max_concurrency", f"must be at least 1 (got {max_concurrency})", "raise it")
        check_server_logprobs(logprobs_mode)
        self.logprobs_mode = logprobs_mode
        self.base_url = self.base_urls[0]
        self.tokenizer = tokenizer
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers,
                                  limits=httpx.Limits(max_connections=max_concurrency))
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="reason-openai")
        listed = self._call("GET", "/models")["data"] if model is None or max_context is None else []
        if model is None:
            if not listed:
                raise ReasonError("model", f"the server at {self.base_url} lists no models", "pass the served model name")
            model = listed[0]["id"]
        if max_context is None:
            entry = next((m for m in listed if m.get("id") == model), {})
            max_context = entry.get("max_model_len")
        if not max_context:
            raise ReasonError("max_context", "the server does not report max_model_len", "pass the model's context length")
        self.model = model
        self.max_context = int(max_context)
        self._tickets = 0
        self._pending: dict[Future, _Call] = {}
        self.requests = 0  # completion requests sent

    @classmethod
    def from_pretrained(cls, model: str, *, base_url: str, served_model: str | None = None,
                        trust_remote_code: bool = False, **options: Any) -> OpenAIEngine:
        """Load ``model``'s tokenizer (local directory or hub id) and connect to ``base_url``."""
        from transformers import AutoTokenizer

        name = checkpoint_name(model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ReasonError("model", f"cannot load the tokenizer of {model!r} ({str(exc).splitlines()[0]})",
                              "give a local checkpoint directory or a reachable hub id") from None
        return cls(base_url, tokenizer, model=served_model, **options)

    # -- text -----------------------------------------------------------------------------------

    def tokenize_prompt(self, prompt: Any) -> tuple[list[int], str]:
        return tokenize_prompt(self.tokenizer, prompt, len(self.tokenizer))

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    # -- HTTP -----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``method path`` on the servers in turn (the first one that answers), with retries."""
        for base in self.base_urls[:-1]:
            try:
                return self._call_one(base, method, path, body, retries=0)
            except ReasonError as exc:
                if exc.field != "base_url":
                    raise
        return self._call_one(self.base_urls[-1], method, path, body, self.retries)

    def _call_one(self, base: str, method: str, path: str, body: dict[str, Any] | None,
                  retries: int) -> dict[str, Any]:
        import httpx

        url = base + path
        last = ""
        for attempt in range(retries + 1):
            wait_backoff(self.backoff, attempt)
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise ReasonError("server", f"{url} answered {response.status_code}: {_message(response)}",
                                  _hint(response.status_code))
            return response.json()
        raise ReasonError("base_url", f"{url} failed after {retries + 1} attempts ({last})",
                          "check that the server is running and reachable")

    def _expand_call(self, call: _Call, body: dict[str, Any]) -> dict[str, Any]:
        """POST one expansion to its tree's server (see :mod:`reason.core.engine.routing`): a server
        that does not answer is taken out and the request goes to another at once; with none left,
        retries back off as with one server."""
        import httpx

        uid = call.request.tree.uid
        attempts, moves, last, url = 0, 0, "", ""
        while True:
            server = self.servers.pick(uid)
            url = self.base_urls[server] + "/completions"
            attempts += 1
            try:
                response = self._http.post(url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code not in RETRY_STATUS and response.status_code < 400:
                    data = response.json()
                    details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
                    self.servers.finished(server, len(call.ids), int(details.get("cached_tokens") or 0))
                    return data
                if response.status_code not in RETRY_STATUS:
                    self.servers.failed(server, take_out=False)
                    raise ReasonError("server", f"{url} answered {response.status_code}: {_message(response)}",
                                      _hint(response.status_code))
                last = f"HTTP {response.status_code}"
            several = len(self.base_urls) > 1
            elsewhere = self.servers.failed(server, take_out=several)
            if several:
                self._start_probing()
            if elsewhere and moves < 2 * len(self.base_urls):
                moves += 1
                continue
            if attempts - moves > self.retries or self._closed.is_set():
                break
            wait_backoff(self.backoff, attempts - moves)
        raise ReasonError("base_url", f"{url} failed after {attempts} attempts ({last})",
                          "check that the server is running and reachable")

    def _start_probing(self) -> None:
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_loop, name="reason-openai-probe", daemon=True)
            self._prober.start()

    def _probe_loop(self) -> None:
        """While servers are taken out, ask each for its model list every ``probe_interval`` seconds;
        one that answers takes new trees again."""
        import httpx

        while not self._closed.wait(self.probe_interval):
            down = self.servers.down()
            if not down:
                return
            for server in down:
                try:
                    ok = self._http.get(self.base_urls[server] + "/models", timeout=2.0).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.servers.revive(server)

    def server_stats(self) -> list[dict[str, Any]]:
        """Per server: URL, health, requests, failures, trees held and moved in, prompt tokens sent
        and found cached (see :class:`~reason.core.engine.routing.ServerStats`)."""
        return self.servers.report()

    def release(self, tree: Any) -> None:
        """Forget which server ``tree`` was routed to."""
        self.servers.release(tree.uid)

    def _payload(self, request: ExpandRequest, ids: list[int]) -> dict[str, Any]:
        stop, sampling = request.stop, request.sampling
        body: dict[str, Any] = {
            "model": self.model, "prompt": ids, "n": request.n, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "max_tokens": max_new_tokens(stop, self.max_context - len(ids)), "logprobs": 0,
            "return_token_ids": True, "include_stop_str_in_output": True,
        }
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        for name, off in EXTENSIONS_OFF.items():  # vLLM's extensions, sent only when on
            if getattr(sampling, name) != off:
                body[name] = getattr(sampling, name)
        if stop.min_tokens:  # within the cap asked for (a segment may be shorter)
            body["min_tokens"] = min(stop.min_tokens, body["max_tokens"])
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if stop.strings:
            body["stop"] = list(stop.strings)
        if stop.token_ids:
            body["stop_token_ids"] = list(stop.token_ids)
        if not stop.eos:
            body["ignore_eos"] = True
        return body

    # -- requests -------------------------------------------------------------------------------

    def submit(self, request: ExpandRequest) -> int:
        ids = request_ids(request, self.max_context)
        self._tickets += 1
        self.requests += 1
        call = _Call(self._tickets, request, ids, request.tree.reserve_ids(request.n))
        fut = self._pool.submit(self._expand_call, call, self._payload(request, ids))
        self._pending[fut] = call
        return call.ticket

    def has_work(self) -> bool:
        return bool(self._pending)

    def cancel(self, ticket: int) -> bool:
        """Drop the expansion ``ticket``: a call not yet sent is never sent; one in flight is
        left to finish in its thread (a blocking HTTP call cannot be interrupted) and its answer
        is thrown away."""
        for fut, call in self._pending.items():
            if call.ticket == ticket:
                del self._pending[fut]
                fut.cancel()  # succeeds only while the call waits for a free thread
                return True
        return False

    def step(self) -> list[Outcome]:
        if not self._pending:
            return []
        started = time.perf_counter()
        done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
        out: list[Outcome] = []
        for fut in sorted(done, key=lambda f: self._pending[f].ticket):
            call = self._pending.pop(fut)
            try:
                children = self._children(call, fut.result())
                out.append(Outcome(call.ticket, children))
            except Exception as exc:  # noqa: BLE001 -- the error belongs to this request alone
                out.append(Outcome(call.ticket, [], exc))
        self.ledger.wall_seconds += time.perf_counter() - started
        return out

    def _children(self, call: _Call, response: dict[str, Any]) -> list[Node]:
        stop = call.request.stop
        outputs = []
        for c in sorted(response.get("choices", []), key=lambda c: c.get("index", 0)):
            ids = _token_ids(c)
            reported = c.get("logprobs") or {}
            lps = [float(x) for x in reported.get("token_logprobs") or []]
            out = Sampled.reported(ids, lps, finish_reason(c.get("finish_reason"), c.get("stop_reason"), stop, len(ids)),
                                   self.logprobs_mode)
            extra = reported.get("sampling_logprobs")  # reason serve's: the sampling distribution's
            if extra and not out.sampling_logprobs:
                out.sampling_logprobs = [float(x) for x in extra]
            outputs.append(out)
        return add_children(self, call.request, call.node_ids, outputs)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()


def _token_ids(choice: dict[str, Any]) -> list[int]:
    ids = choice.get("token_ids")
    if ids is not None:
        return [int(t) for t in ids]
    tokens = (choice.get("logprobs") or {}).get("tokens") or []
    if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return [int(t.split(":", 1)[1]) for t in tokens]
    raise ReasonError("server", "returned no token ids",
                      "use a server that supports return_token_ids (vLLM >= 0.10.2, reason serve)")


def _message(response: Any) -> str:
    try:
        err = response.json().get("error", {})
        message = err.get("message") if isinstance(err, dict) else str(err)
    except ValueError:
        message = None
    return (message or response.text or "no message").strip().splitlines()[0]


def _hint(status: int) -> str:
    if status == 401:
        return "pass the server's key with --api-key"
    if status == 404:
        return "check --base-url (it should end in /v1) and the served model name"
    return "the server cannot do what this request needs (token-id prompts, n, seeds, logprobs)"
