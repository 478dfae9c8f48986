"""The ``openai`` backend's retries, against a real ``reason serve`` app that fails on purpose.

A small ASGI wrapper in front of the app answers the first completion requests with the statuses it
is given (429, 5xx, ...) and passes every later one to the real app, so a retried request gets a
real answer; all of it on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.openai import OpenAIEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.serve import create_app
from reason.serve.thread import ServerThread

PATH = resolve_model("arith")
STOP = Stop(max_tokens=24)
SAMPLING = Sampling(temperature=1.0, seed=5)


class FailFirst:
    """ASGI middleware: the next ``/v1/completions`` requests get ``faults`` (one status each, in
    order) instead of an answer; ``seen`` counts every completion request that arrived."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.faults: list[int] = []
        self.seen = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/completions":
            self.seen += 1
            if self.faults:
                status = self.faults.pop(0)
                body = json.dumps({"error": {"message": f"injected {status}", "code": status}}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def engine():
    return HFEngine.from_pretrained(PATH, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def faulty(engine):
    """``(fault injector, server)`` in front of a real app over the bundled arith model."""
    injector = FailFirst(create_app(engine, model_name="arith"))
    with ServerThread(injector) as srv:
        yield injector, srv


@pytest.fixture(scope="module")
def no_fault(engine) -> list[list[int]]:
    """The children's token ids of the test expansion, in process."""
    tree = engine.new_tree("12+3*4-5\n")
    return [c.token_ids for c in engine.expand(tree, tree.root, 3, STOP, SAMPLING)]


def expand(client: OpenAIEngine) -> list[list[int]]:
    tree = client.new_tree("12+3*4-5\n")
    return [c.token_ids for c in client.expand(tree, tree.root, 3, STOP, SAMPLING)]


@pytest.mark.parametrize("faults", [[429], [503, 429, 500]])
def test_client_retries_429_and_5xx_to_the_no_fault_answer(engine, faulty, no_fault, faults):
    injector, srv = faulty
    client = OpenAIEngine(srv.url, engine.tokenizer, retries=3, backoff=0.001)
    injector.faults, injector.seen = list(faults), 0
    assert expand(client) == no_fault
    assert injector.seen == len(faults) + 1 and not injector.faults  # one retry per fault, then the answer
    client.close()


def test_client_gives_up_after_its_retries_with_one_line(engine, faulty):
    injector, srv = faulty
    client = OpenAIEngine(srv.url, engine.tokenizer, retries=2, backoff=0.001)
    injector.faults, injector.seen = [503] * 5, 0
    with pytest.raises(ReasonError) as err:
        expand(client)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"base_url: {srv.url}/completions failed after 3 attempts (HTTP 503)")
    assert injector.seen == 3 and len(injector.faults) == 2  # retries=2: three attempts, no more
    injector.faults = []
    client.close()


def test_client_does_not_retry_a_plain_4xx(engine, faulty):
    injector, srv = faulty
    client = OpenAIEngine(srv.url, engine.tokenizer, retries=3, backoff=0.001)
    injector.faults, injector.seen = [404, 404], 0
    with pytest.raises(ReasonError, match=r"^server: .* answered 404: injected 404") as err:
        expand(client)
    assert "\n" not in str(err.value)
    assert injector.seen == 1
    injector.faults = []
    client.close()
