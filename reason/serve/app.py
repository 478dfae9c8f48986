"""The HTTP app: OpenAI-compatible completions over one engine, plus whole searches.

Endpoints: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/v1/solve`` (a search
strategy at a budget), ``/v1/rewards`` (the server's PRMs and value models as a service,
:mod:`reason.serve.rewards`), ``/v1/ledger`` (work done and prefix reuse), ``/health``. All expansion
work goes through one :class:`~reason.serve.worker.EngineWorker`, so concurrent clients share
forwards, and prompts are placed in the server's trees (:class:`~reason.serve.tree_index.PromptIndex`),
so a client that sends whole paths as token ids gets its cached prefix back. Completions asked for
logprobs carry, beside ``token_logprobs`` (the model's own: temperature 1, unfiltered), an extra
``sampling_logprobs`` list: each token's logprob under the distribution it was drawn from
(penalties, ``min_tokens`` masks, temperature, min-p, top-k and top-p applied; 0 for a greedy pick),
which the ``openai`` backend keeps.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): 400 for bad input,
with a one-line message naming the field; 401 for a missing or wrong API key; 413 for a body over
the size limit (refused before parsing); 500 only for a bug. Request sizes are capped
(:mod:`reason.serve.limits`, docs/limits.md), prompts are tokenized off the event loop by a few
threads, and the PRM and value models a ``/v1/solve`` request may name are the ones the server was
started with (``create_app(prms=..., values=...)``, ``reason serve --prm/--value``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from reason.core.engine.base import Engine, ExpandRequest, Sampling, Stop, run_sampling
from reason.core.engine.text import check_token_ids
from reason.core.errors import ReasonError, from_validation_error
from reason.core.tree import Node
from reason.serve.compat import ignored_header, output_text, render_chat, truncate
from reason.serve.limits import PREFIX_CHARS_PER_TOKEN, TOKENIZE_THREADS, BodyLimit, ServerLimits, error_body
from reason.serve.rewards import owned, register_rewards
from reason.serve.schemas import ChatRequest, CompletionRequest, SolveRequest
from reason.serve.tree_index import PromptIndex
from reason.serve.views import keep_view, register_views
from reason.serve.worker import (
    ClientGone,
    EngineWorker,
    WorkerEngine,
    unless_disconnected,
)
from reason.shortcuts import solve as run_solve
from rewards.catalog import load_prm
from rewards.value import PRMValue
from search import strategies
from search.solve import check_options

DEFAULT_PRMS = ("arith",)
"""The PRMs offered when the server is given none: the exact arith step checker, which loads no weights."""


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(error_body(status, message, param, kind), status_code=status)


def _union_tag(part: Any) -> bool:
    """A location part pydantic adds for a union member (``str``, ``list[int]``, ``constrained-str``)."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool"))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    # For a union field pydantic reports every member's error: the informative one is a broken
    # constraint rather than a type mismatch, else the one that got deepest into the value.
    err = min(errors, key=lambda e: (str(e.get("type", "")).endswith("_type"), -len(e.get("loc", ()))))
    loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _union_tag(p)]
    field = ".".join(loc) or "body"
    kind = err.get("type", "")
    if kind == "json_invalid":
        return f"body: malformed JSON ({err.get('ctx', {}).get('error', 'cannot parse')}); send a JSON object", "body"
    if kind == "extra_forbidden":
        return f"{field}: unknown field; remove it (this server does not support it)", field
    if kind == "missing":
        return f"{field}: required; add it", field
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    got = repr(err.get("input"))
    return f"{field}: {msg} (got {got if len(got) <= 200 else got[:200] + '...'})", field


class Server:
    """State behind the app: the worker, the prompt index, request counters, the size limits and the
    scorers clients may choose from."""

    def __init__(self, engine: Engine, model_name: str, max_tree_tokens: int, limits: ServerLimits | None = None,
                 prms: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None) -> None:
        self.engine = engine
        self.limits = limits or ServerLimits()
        self.prms = dict({name: load_prm(name) for name in DEFAULT_PRMS} if prms is None else prms)
        self.values = dict(values or {})
        self._prm_values: dict[str, PRMValue] = {}
        self.tokenizing = ThreadPoolExecutor(TOKENIZE_THREADS, thread_name_prefix="reason-tokenize")
        self.model_name = model_name
        self.worker = EngineWorker(engine)
        self.index = PromptIndex(engine, max_tree_tokens)
        self.context = engine.max_context
        self.prompt_tokens = 0  # prompt tokens received over all completion requests
        self.ids = itertools.count(1)
        self._pieces: dict[int, str] = {}
        self.vocab_size = len(engine.tokenizer) if engine.tokenizer is not None else None

    def encode(self, prompt: Any, chat: tuple[bool, bool] | None = None) -> list[int]:
        """Token ids of one prompt; ids are checked, not decoded (clients send whole paths). ``chat``:
        a conversation's ``(add_generation_prompt, continue_final_message)`` when not the default."""
        if chat is not None:
            return render_chat(self.engine.tokenizer, prompt, *chat)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            check_token_ids(prompt, self.vocab_size)
            return prompt
        if isinstance(prompt, str) and self.context is not None and len(prompt) > self.context * PREFIX_CHARS_PER_TOKEN:
            head = self.engine.tokenize_prompt(prompt[: self.context * PREFIX_CHARS_PER_TOKEN])[0]
            if len(head) > self.context + PREFIX_CHARS_PER_TOKEN:  # the margin: a cut word may split differently
                raise ReasonError("prompt", f"its first {self.context * PREFIX_CHARS_PER_TOKEN} characters alone are "
                                  f"{len(head)} tokens, over the model's context ({self.context})", "shorten it")
        return self.engine.tokenize_prompt(prompt)[0]

    async def encode_all(self, prompts: list[Any], chat: tuple[bool, bool] | None = None) -> list[list[int]]:
        """:meth:`encode` of each prompt in the tokenizing threads, so the event loop (``/health``,
        other clients) never waits on a long prompt; prompt sizes are checked first."""
        for prompt in prompts:
            if isinstance(prompt, str):
                self.limits.check("prompt", len(prompt), "prompt_chars", "characters")
            elif prompt and isinstance(prompt[0], dict):  # chat messages
                self.limits.check("messages", sum(len(m["content"]) + len(m["role"]) for m in prompt),
                                  "prompt_chars", "characters")
        loop = asyncio.get_running_loop()
        encode = self.encode if chat is None else functools.partial(self.encode, chat=chat)
        return list(await asyncio.gather(*(loop.run_in_executor(self.tokenizing, encode, p) for p in prompts)))

    def pieces(self, token_ids: list[int]) -> list[str]:
        """Each token's text on its own (memoised: logprob listings decode every token)."""
        out = []
        for t in token_ids:
            piece = self._pieces.get(t)
            if piece is None:
                piece = self._pieces[t] = self.engine.decode([t])
            out.append(piece)
        return out

    async def expand(self, ids: list[int], n: int, stop: Stop, sampling: Sampling) -> tuple[list[Node], int]:
        """``n`` children of the node ``ids`` leads to, and how many of ``ids`` were cached (found in the
        trees). All of ``ids`` is the prompt for the sampling penalties, as in vLLM, however the tree
        splits it into nodes."""
        self.prompt_tokens += len(ids)
        placed: list[Any] = []
        children: list[Node] = []

        def build() -> ExpandRequest:  # in the worker thread, which alone touches the trees
            tree, node, reused = self.index.place(ids)
            placed.extend((tree, reused))
            return ExpandRequest(tree, node, n, stop, sampling, prompt_len=len(ids))

        added = 0
        fut = self.worker.submit(build)
        try:
            children = await asyncio.wrap_future(fut)
            added = sum(len(c.token_ids) for c in children)
            return children, placed[1]
        except asyncio.CancelledError:  # the client went away: stop its sequences in the engine
            self.worker.cancel(fut)
            raise
        finally:
            # Looked at in the worker thread, after ``build`` ran there or was skipped as cancelled.
            self.worker.call(lambda: placed and self.index.done(placed[0], added, children))

    def check_room(self, n_prompt: int, max_tokens: int | None, field: str) -> int | None:
        """``max_tokens`` bounded by the context; a 400 when the prompt or the request does not fit."""
        if self.context is None:
            return max_tokens
        if n_prompt >= self.context:
            raise ReasonError("prompt", f"{n_prompt} tokens fill the model's context ({self.context})", "shorten it")
        room = self.context - n_prompt
        if max_tokens is not None and max_tokens > room:
            raise ReasonError(field, f"{max_tokens} plus the {n_prompt}-token prompt exceed the model's context "
                              f"({self.context})", f"ask for at most {room}")
        return max_tokens

    def scorers(self, prm: str | None, value: str | None) -> tuple[Any, Any]:
        """The PRM and value model a request names, among those the server was started with (a 400
        naming the allowed ones otherwise). Value ``"prm"`` is the chosen PRM's score as a value.
        Nothing is loaded here, so a client cannot make the server read a path or reach the hub."""
        def pick(field: str, name: str, offered: Mapping[str, Any], extra: tuple[str, ...] = ()) -> Any:
            if name not in offered:
                names = ", ".join(sorted([*offered, *extra])) or "none"
                raise ReasonError(field, f"{name[:80]!r} is not one this server offers (it offers: {names})",
                                  f"name one of those; the server's scorers are set at start "
                                  f"(reason serve --{field} NAME[=PATH])")
            return offered[name]

        prm_model = pick("prm", prm, self.prms) if prm is not None else None
        if value is None:
            return prm_model, None
        if value == "prm" and "prm" not in self.values:
            if prm is None:
                raise ReasonError("value", "'prm' needs a PRM", "also name a prm")
            if prm not in self._prm_values:
                self._prm_values[prm] = PRMValue(prm_model)
            return prm_model, self._prm_values[prm]
        return prm_model, pick("value", value, self.values, ("prm",) if self.prms else ())


def _stop_and_sampling(body: Any, max_tokens: int | None) -> tuple[Stop, Sampling]:
    stop = Stop(strings=body.stop_strings(), token_ids=tuple(body.stop_token_ids or ()), eos=not body.ignore_eos,
                max_tokens=max_tokens, min_tokens=body.min_tokens)
    sampling = Sampling(temperature=body.temperature, top_p=body.top_p, top_k=max(0, body.top_k), seed=body.seed,
                        min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                        presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty)
    return stop, sampling


def _finish(node: Node, body: Any, tokenizer: Any) -> tuple[str, str, Any]:
    """OpenAI finish reason, the text to return, and vLLM's ``stop_reason``."""
    text = output_text(tokenizer, node, body.skip_special_tokens)
    if node.finish_reason == "eos":
        return "stop", text, None
    if node.finish_reason != "stop":
        return "length", text, None
    hits = [(text.find(s), s) for s in body.stop_strings() if s in text]
    if hits:
        at, s = min(hits)
        return "stop", text[: at + len(s)] if body.include_stop_str_in_output else text[:at], s
    return "stop", text, node.token_ids[-1]  # a stop token id


def create_app(engine: Engine, *, model_name: str = "reason", api_key: str | None = None,
               max_tree_tokens: int = 2_000_000, limits: ServerLimits | None = None,
               prms: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` (see the module docstring).

    ``limits``: the request size caps (default :class:`ServerLimits`). ``prms`` / ``values``: the
    loaded scorers ``/v1/solve`` requests may name, by name (default: the PRMs in
    :data:`DEFAULT_PRMS`, no value model; value ``"prm"`` is always the chosen PRM's score). With an
    ``api_key``, ``/docs``, ``/redoc`` and ``/openapi.json`` are off."""
    server = Server(engine, model_name, max_tree_tokens, limits, prms, values)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        server.worker.close()
        server.tokenizing.shutdown(wait=False, cancel_futures=True)
        scoring.close()

    docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None} if api_key else {}
    app = FastAPI(title="reason", lifespan=lifespan, **docs)
    app.state.server = server

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "authorization: missing or wrong API key; send 'Authorization: Bearer <key>'",
                              "authorization", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return _error(400, message, field)

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, __: ClientGone) -> JSONResponse:
        return _error(499, "client disconnected; its work was cancelled", None, "client_closed_request")  # none reads it

    @app.exception_handler(ReasonError)
    async def bad_input(_: Request, exc: ReasonError) -> JSONResponse:
        return _error(400, str(exc), exc.field)

    @app.exception_handler(ValidationError)
    async def bad_value(_: Request, exc: ValidationError) -> JSONResponse:
        err = from_validation_error(exc)  # a model (Stop, Sampling, options) built from the request refused it
        return _error(400, str(err), err.field)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        cause = exc.__cause__  # fastapi answers a body it cannot decode (bad UTF-8, huge numbers, deep nesting) so
        if cause is not None:
            return _error(400, f"body: cannot be read as JSON ({type(cause).__name__}: {str(cause)[:120]}); "
                          "send a UTF-8 JSON object", "body")
        return _error(exc.status_code, f"{exc.detail}", None)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so the server still logs the traceback.
        return _error(500, f"internal error ({type(exc).__name__}); this is a bug in the server, please report it "
                      "with the request", None, "server_error")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "reason",
                                            "max_model_len": server.context}]}

    @app.get("/v1/ledger")
    async def ledger() -> dict[str, Any]:
        led = engine.ledger.model_dump()
        return {"engine": led, "requests": server.worker.requests, "completed": server.worker.completed,
                "cancelled": server.worker.cancelled,
                "prompt_tokens_received": server.prompt_tokens, "prompt_tokens_reused": server.index.reused_tokens,
                "trees": len(server.index), "tree_tokens": server.index.tokens}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> JSONResponse:
        raw = body.prompt
        prompts = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        if not prompts:
            raise ReasonError("prompt", "is empty", "give text or token ids")
        server.limits.check("prompt", len(prompts), "prompts", "prompts")
        server.limits.check("n", len(prompts) * body.n, "choices", "choices (prompts x n)")
        encoded = [truncate(ids, body.truncate_prompt_tokens) for ids in await server.encode_all(prompts)]
        for ids in encoded:
            if not ids:
                raise ReasonError("prompt", "is empty", "give text or token ids")
            server.check_room(len(ids), body.max_tokens, "max_tokens")
        stop, sampling = _stop_and_sampling(body, body.max_tokens)
        expansions = asyncio.gather(*(server.expand(ids, body.n, stop, sampling) for ids in encoded))
        results = await unless_disconnected(expansions, request.receive)
        choices = []
        for p, (children, _) in enumerate(results):
            for j, node in enumerate(children):
                finish, text, reason = _finish(node, body, engine.tokenizer)
                choice: dict[str, Any] = {"index": p * body.n + j, "text": text, "finish_reason": finish,
                                          "stop_reason": reason, "token_ids": node.token_ids, "logprobs": None}
                if body.logprobs is not None:
                    pieces = server.pieces(node.token_ids)
                    offsets = list(itertools.accumulate([0] + [len(x) for x in pieces[:-1]]))
                    choice["logprobs"] = {
                        "tokens": pieces, "token_logprobs": node.logprobs, "text_offset": offsets,
                        "top_logprobs": [{x: lp} for x, lp in zip(pieces, node.logprobs)] if body.logprobs else None,
                    }
                    if node.sampling_logprobs:  # an extension: each token's logprob under the distribution drawn from
                        choice["logprobs"]["sampling_logprobs"] = node.sampling_logprobs
                choices.append(choice)
        n_out = sum(len(c["token_ids"]) for c in choices)
        n_in = sum(len(ids) for ids in encoded)
        cached = sum(reused for _, reused in results)
        return JSONResponse({"id": f"cmpl-{next(server.ids)}", "object": "text_completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out,
                                       "prompt_tokens_details": {"cached_tokens": cached}}},
                            headers=ignored_header(body, "/v1/completions"))

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> JSONResponse:
        ending = (body.add_generation_prompt, body.continue_final_message)
        (ids,) = await server.encode_all([[m.model_dump() for m in body.messages]],
                                         None if ending == (True, False) else ending)
        ids = truncate(ids, body.truncate_prompt_tokens)
        field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = server.check_room(len(ids), body.max_completion_tokens or body.max_tokens, field)
        stop, sampling = _stop_and_sampling(body, max_tokens)
        children, cached = await unless_disconnected(server.expand(ids, body.n, stop, sampling), request.receive)
        choices = []
        for j, node in enumerate(children):
            finish, text, reason = _finish(node, body, engine.tokenizer)
            logprobs = None
            if body.logprobs:
                logprobs = {"content": [{"token": piece, "logprob": lp, "top_logprobs": []}
                                        for piece, lp in zip(server.pieces(node.token_ids), node.logprobs)]}
            choices.append({"index": j, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                            "stop_reason": reason, "token_ids": node.token_ids, "logprobs": logprobs})
        n_out = sum(len(c["token_ids"]) for c in choices)
        return JSONResponse({"id": f"chatcmpl-{next(server.ids)}", "object": "chat.completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": {"prompt_tokens": len(ids), "completion_tokens": n_out,
                                       "total_tokens": len(ids) + n_out, "prompt_tokens_details": {"cached_tokens": cached}}},
                            headers=ignored_header(body, "/v1/chat/completions"))

    @app.post("/v1/solve")
    async def solve(body: SolveRequest, request: Request) -> dict[str, Any]:
        strategies.get(body.strategy)  # unknown strategy: a one-line 400 before any work
        check_options(body.strategy, body.options)
        run_sampling(body.sampling)  # a bad field is a one-line 400 before any work
        server.limits.check("question", len(body.question), "prompt_chars", "characters")
        server.limits.check("budget", body.budget, "budget", "solutions")
        if body.budget_tokens is not None:
            server.limits.check("budget_tokens", body.budget_tokens, "budget_tokens", "tokens")
        # Every scorer call of the search runs in the scoring thread (one owner, batched across searches).
        prm, value = (owned(x, scoring) for x in server.scorers(body.prm, body.value))

        engine_view = WorkerEngine(server.worker)  # aborted when the client goes: the search stops

        def work() -> dict[str, Any]:
            result = run_solve(engine_view, body.question, suite=body.suite, strategy=body.strategy,
                               budget=body.budget, seed=body.seed, prm=prm, value=value, max_tokens=body.max_tokens,
                               budget_tokens=body.budget_tokens, aggregation=body.aggregation,
                               sampling=body.sampling or None, **body.options)
            engine_view.release(result.tree)
            out = result.to_json_dict(include_tree=body.include_tree)
            return keep_view(views, request, out) if body.include_tree else out  # view_url: the tree page

        return await unless_disconnected(run_in_threadpool(work), request.receive, engine_view.abort)

    views = register_views(app, engine.decode)  # /v1/views/{id}: pages of /v1/solve trees (include_tree)
    scoring = register_rewards(app, server)  # /v1/rewards: the server's PRMs and value models as a service
    app.add_middleware(BodyLimit, max_bytes=server.limits.body_bytes)  # outermost: before anything reads the body
    return app
