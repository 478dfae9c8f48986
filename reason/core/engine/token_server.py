"""The ``token_server`` backend: trees grown through someone else's async token-in/token-out generator.

RL trainers own their rollout servers (verl's ``LLMServerClient``, OpenRLHF's vLLM engine actors)
and sync the policy weights into them; a tree rollout inside such a trainer must sample from those
servers, not from a model of its own. :class:`TokenServerEngine` wraps one async function
``generate(prompt_ids, request, max_tokens) -> list[Sampled]`` (one sample per child, in order)
that an adapter writes against its trainer's API. Every pending expansion of a :meth:`step` is sent
at once and awaited together, so the server batches them and its prefix cache sees each path.

The search itself is synchronous (it drives :meth:`step`); inside a trainer's event loop, run it in a
worker thread (``await asyncio.to_thread(...)``) and give the engine that loop: each step's requests
are then scheduled on the trainer's loop, where its clients live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reason.core.engine.base import ExpandRequest, Stop
from reason.core.engine.outputs import Sampled, finish_reason, max_new_tokens
from reason.core.engine.queued import QueuedEngine
from reason.core.tree import FinishReason

Generate = Callable[[list[int], ExpandRequest, int], Awaitable[list[Sampled]]]


class TokenServerEngine(QueuedEngine):
    """Tree expansion through an async ``generate`` function (see the module docstring).

    Parameters:
        generate: ``async generate(prompt_ids, request, max_tokens)`` returning ``request.n``
            samples with per-token logprobs: the model's own in ``Sampled.logprobs``, the sampling
            distribution's in ``Sampled.sampling_logprobs`` (whichever the server reports; see
            :meth:`Sampled.reported <reason.core.engine.outputs.Sampled.reported>`).
        tokenizer: the policy's tokenizer (prompts and node text).
        max_context: the servers' context length.
        loop: the event loop the trainer's client lives on; None runs each step's calls in a fresh loop.
    """

    name = "token_server"

    def __init__(self, generate: Generate, tokenizer: Any, *, max_context: int,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(tokenizer, max_context)
        self.generate = generate
        self.loop = loop

    def generate_all(self, batch: Sequence[tuple[ExpandRequest, list[int]]]) -> list[list[Sampled] | BaseException]:
        """Send every queued expansion at once and wait for all of them."""

        async def run_all() -> list[Any]:
            calls = [self.generate(ids, request, max_new_tokens(request.stop, self.max_context - len(ids)))
                     for request, ids in batch]
            return await asyncio.gather(*calls, return_exceptions=True)

        if self.loop is not None:
            return asyncio.run_coroutine_threadsafe(run_all(), self.loop).result()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run_all())
        with ThreadPoolExecutor(1) as pool:  # the search's own loop is running here: use a fresh one beside it
            return pool.submit(asyncio.run, run_all()).result()


def finish_from_tokens(token_ids: Sequence[int], text: str, stop: Stop, eos_ids: Collection[int]) -> FinishReason:
    """The tree's finish reason of a sample from a server that reports none: its last token is an
    end-of-sequence id, a stop token, or its text ends with a stop string; otherwise it hit a cap."""
    last = token_ids[-1] if token_ids else None
    if stop.eos and last in eos_ids:
        return "eos"
    if last in stop.token_ids or any(text.endswith(s) for s in stop.strings):
        return "stop"
    return finish_reason(None, None, stop, len(token_ids))
