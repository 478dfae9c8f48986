"""Per-request size limits of ``reason serve`` and the ASGI middleware that caps request bodies.

Every limit is a named constant (the default) and a field of :class:`ServerLimits`, which
``create_app(limits=...)`` and the ``reason serve --max-*`` options set. The list, with the option
that changes each, is in docs/limits.md ("Server").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from reason.core.engine.base import MIN_TEMPERATURE  # noqa: F401 -- the schemas' floor, one value with Sampling's
from reason.core.errors import ReasonError

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Request body bytes (``--max-body-bytes``): larger bodies get a 413 before any parsing. 8 MiB holds
a 128k-token prompt as text or as token ids with room to spare."""

MAX_PROMPT_CHARS = 1_000_000
"""Characters of one prompt, chat conversation or ``/v1/solve`` question (``--max-prompt-chars``),
checked before tokenizing (a token covers at least one character of ordinary text, so this is over
7x the longest context of current models at ~4 characters a token)."""

MAX_PROMPTS = 64
"""Prompts in one ``/v1/completions`` request (``--max-prompts``)."""

MAX_CHOICES = 256
"""Choices one request may ask for: prompts x ``n`` (``--max-choices``); as many as ``n`` alone may be."""

MAX_BUDGET = 4096
"""``/v1/solve`` ``budget``: solutions (or the strategy's unit of budget) per question (``--max-budget``)."""

MAX_BUDGET_TOKENS = 1_000_000
"""``/v1/solve`` ``budget_tokens``: generated tokens per question (``--max-budget-tokens``)."""

MAX_N = 256
"""``n`` of one completion request (fixed: the request schema checks it)."""

MAX_STOP = 64
"""Stop strings and stop token ids of one request, each (fixed: every one is checked after each token)."""


PREFIX_CHARS_PER_TOKEN = 16
"""A text prompt longer than the context x this many characters is first tokenized only that far: when
that prefix alone fills the context, the prompt is refused without tokenizing the rest."""

TOKENIZE_THREADS = 2
"""Threads that tokenize prompts off the event loop; more tokenizing requests wait their turn."""


@dataclass(frozen=True)
class ServerLimits:
    """The server's configurable caps (defaults: the module's constants)."""

    body_bytes: int = MAX_BODY_BYTES
    prompt_chars: int = MAX_PROMPT_CHARS
    prompts: int = MAX_PROMPTS
    choices: int = MAX_CHOICES
    budget: int = MAX_BUDGET
    budget_tokens: int = MAX_BUDGET_TOKENS

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                option = "max-" + f.name.replace("_", "-")
                raise ReasonError(option, f"must be a positive integer (got {value!r})",
                                  f"pass e.g. --{option} {f.default}")

    def check(self, field: str, value: int, limit: str, what: str) -> None:
        """A 400 (:class:`ReasonError` on ``field``) when ``value`` is over the limit named ``limit``."""
        cap = getattr(self, limit)
        if value > cap:
            option = "--max-" + limit.replace("_", "-")
            raise ReasonError(field, f"{value} {what} are over this server's limit of {cap}",
                              f"send at most {cap} (the server's {option})")


def error_body(status: int, message: str, param: str | None = None,
               kind: str = "invalid_request_error") -> dict[str, Any]:
    """The OpenAI-shaped error body every error response carries."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 before the app parses it.

    A ``Content-Length`` over the cap is refused without reading the body; a body sent without one
    (chunked) is read up to the cap and refused as soon as it passes it. The body, once read whole,
    is handed to the app in one message; later ``receive`` calls go to the client (so disconnects
    still reach the app)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await self._refuse(send, 400, f"content-length: {length[:40]!r} is not a byte count",
                                   "content-length")
                return
            if int(length) > self.max_bytes:
                await self._too_large(send, int(length))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: list[bytes] | None = [b"".join(chunks)]
        del chunks

        async def replay() -> MutableMapping[str, Any]:
            nonlocal body
            if body is not None:
                whole, body = body[0], None
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, length: int | None) -> None:
        got = f"{length} bytes are" if length is not None else "it is"
        await self._refuse(send, 413, f"body: {got} over this server's limit of {self.max_bytes} bytes; "
                           "send less (the server's --max-body-bytes)", "body")

    @staticmethod
    async def _refuse(send: Send, status: int, message: str, param: str) -> None:
        payload = json.dumps(error_body(status, message, param)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
