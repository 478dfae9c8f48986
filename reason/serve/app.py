"""The HTTP app: OpenAI-compatible completions over one engine, plus whole searches.

Endpoints: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/v1/solve`` (a search
strategy at a budget), ``/v1/ledger`` (work done and prefix reuse), ``/health``. All expansion
work goes through one :class:`~reason.serve.worker.EngineWorker`, so concurrent clients share
forwards, and prompts are placed in the server's trees (:class:`~reason.serve.tree_index.PromptIndex`),
so a client that sends whole paths as token ids gets its cached prefix back. Completions asked for
logprobs carry, beside ``token_logprobs`` (the model's own: temperature 1, unfiltered), an extra
``sampling_logprobs`` list: each token's logprob under the distribution it was drawn from
(temperature, top-k and top-p applied; 0 for a greedy pick), which the ``openai`` backend keeps.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): 400 for bad input,
with a one-line message naming the field; 401 for a missing or wrong API key.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reason.core.engine.base import Engine, ExpandRequest, Sampling, Stop
from reason.core.engine.text import check_token_ids
from reason.core.errors import ReasonError
from reason.core.tree import Node, Tree
from reason.serve.schemas import ChatRequest, CompletionRequest, SolveRequest
from reason.serve.tree_index import PromptIndex
from reason.serve.worker import EngineWorker, WorkerEngine
from reason.shortcuts import solve as run_solve
from rewards.catalog import load_prm, load_value
from search import strategies
from search.solve import check_options


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    kind = err.get("type", "")
    if kind == "json_invalid":
        return f"body: malformed JSON ({err.get('ctx', {}).get('error', 'cannot parse')}); send a JSON object", "body"
    if kind == "extra_forbidden":
        return f"{field}: unknown field; remove it (this server does not support it)", field
    if kind == "missing":
        return f"{field}: required; add it", field
    return f"{field}: {err.get('msg', 'invalid value')} (got {err.get('input')!r})", field


class Server:
    """State behind the app: the worker, the prompt index and request counters."""

    def __init__(self, engine: Engine, model_name: str, max_tree_tokens: int) -> None:
        self.engine = engine
        self.model_name = model_name
        self.worker = EngineWorker(engine)
        self.index = PromptIndex(engine, max_tree_tokens)
        self.context = engine.max_context
        self.prompt_tokens = 0  # prompt tokens received over all completion requests
        self.ids = itertools.count(1)
        self._scorers: dict[tuple[str, str], Any] = {}
        self._pieces: dict[int, str] = {}
        self.vocab_size = len(engine.tokenizer) if engine.tokenizer is not None else None

    def encode(self, prompt: Any) -> list[int]:
        """Token ids of one prompt; ids are checked, not decoded (clients send whole paths)."""
        if isinstance(prompt, list):
            check_token_ids(prompt, self.vocab_size)
            return prompt
        return self.engine.tokenize_prompt(prompt)[0]

    def pieces(self, token_ids: list[int]) -> list[str]:
        """Each token's text on its own (memoised: logprob listings decode every token)."""
        out = []
        for t in token_ids:
            piece = self._pieces.get(t)
            if piece is None:
                piece = self._pieces[t] = self.engine.decode([t])
            out.append(piece)
        return out

    async def expand(self, ids: list[int], n: int, stop: Stop, sampling: Sampling) -> list[Node]:
        self.prompt_tokens += len(ids)
        placed: list[Tree] = []

        def build() -> ExpandRequest:  # in the worker thread, which alone touches the trees
            tree, node = self.index.locate(ids)
            placed.append(tree)
            return ExpandRequest(tree, node, n, stop, sampling)

        added = 0
        try:
            children = await asyncio.wrap_future(self.worker.submit(build))
            added = sum(len(c.token_ids) for c in children)
            return children
        finally:
            if placed:
                self.worker.call(lambda: self.index.done(placed[0], added))

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

    def scorer(self, kind: str, spec: str, prm: Any = None) -> Any:
        key = (kind, spec)
        if key not in self._scorers:
            self._scorers[key] = load_prm(spec) if kind == "prm" else load_value(spec, prm=prm)
        return self._scorers[key]


def _stop_and_sampling(body: Any, max_tokens: int | None) -> tuple[Stop, Sampling]:
    stop = Stop(strings=body.stop_strings(), token_ids=tuple(body.stop_token_ids or ()), eos=not body.ignore_eos,
                max_tokens=max_tokens)
    sampling = Sampling(temperature=body.temperature, top_p=body.top_p, top_k=max(0, body.top_k), seed=body.seed)
    return stop, sampling


def _finish(node: Node, body: Any) -> tuple[str, str, Any]:
    """OpenAI finish reason, the text to return, and vLLM's ``stop_reason``."""
    text = node.text
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
               max_tree_tokens: int = 2_000_000) -> FastAPI:
    """The FastAPI app serving ``engine`` (see the module docstring)."""
    server = Server(engine, model_name, max_tree_tokens)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        server.worker.close()

    app = FastAPI(title="reason", lifespan=lifespan)
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

    @app.exception_handler(ReasonError)
    async def bad_input(_: Request, exc: ReasonError) -> JSONResponse:
        return _error(400, str(exc), exc.field)

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
                "prompt_tokens_received": server.prompt_tokens, "prompt_tokens_reused": server.index.reused_tokens,
                "trees": len(server.index), "tree_tokens": server.index.tokens}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> JSONResponse:
        raw = body.prompt
        prompts = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        if not prompts:
            raise ReasonError("prompt", "is empty", "give text or token ids")
        encoded = [server.encode(p) for p in prompts]
        for ids in encoded:
            if not ids:
                raise ReasonError("prompt", "is empty", "give text or token ids")
            server.check_room(len(ids), body.max_tokens, "max_tokens")
        stop, sampling = _stop_and_sampling(body, body.max_tokens)
        results = await asyncio.gather(*(server.expand(ids, body.n, stop, sampling) for ids in encoded))
        choices = []
        for p, children in enumerate(results):
            for j, node in enumerate(children):
                finish, text, reason = _finish(node, body)
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
        return JSONResponse({"id": f"cmpl-{next(server.ids)}", "object": "text_completion", "created": int(time.time()),
                             "model": model_name, "choices": choices,
                             "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> JSONResponse:
        ids, _ = engine.tokenize_prompt([m.model_dump() for m in body.messages])
        field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = server.check_room(len(ids), body.max_completion_tokens or body.max_tokens, field)
        stop, sampling = _stop_and_sampling(body, max_tokens)
        children = await server.expand(ids, body.n, stop, sampling)
        choices = []
        for j, node in enumerate(children):
            finish, text, reason = _finish(node, body)
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
                                       "total_tokens": len(ids) + n_out}})

    @app.post("/v1/solve")
    async def solve(body: SolveRequest) -> dict[str, Any]:
        strategies.get(body.strategy)  # unknown strategy: a one-line 400 before any work
        check_options(body.strategy, body.options)

        def work() -> dict[str, Any]:
            prm = server.scorer("prm", body.prm) if body.prm else None
            value = server.scorer("value", body.value, prm) if body.value else None
            engine_view = WorkerEngine(server.worker)
            result = run_solve(engine_view, body.question, suite=body.suite, strategy=body.strategy,
                               budget=body.budget, seed=body.seed, prm=prm, value=value, max_tokens=body.max_tokens,
                               budget_tokens=body.budget_tokens, aggregation=body.aggregation, **body.options)
            engine_view.release(result.tree)
            return result.to_json_dict(include_tree=body.include_tree)

        return await run_in_threadpool(work)

    return app
