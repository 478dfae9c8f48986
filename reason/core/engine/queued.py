"""The base of backends whose samples come from elsewhere: expansions queue here, and each step
hands the whole queue to one batched generate (an in-process ``vllm.LLM``, a trainer's rollout
servers) and turns the samples into tree children."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from reason.core.engine.base import Engine, ExpandRequest, Outcome
from reason.core.engine.outputs import Sampled, add_children, request_ids
from reason.core.engine.text import decode, tokenize_prompt
from reason.core.errors import ReasonError


class QueuedEngine(Engine):
    """Tokenizes with ``tokenizer`` on this side; :meth:`generate_all` answers a step's queued
    expansions together. ``max_context`` is the generator's context length."""

    def __init__(self, tokenizer: Any, max_context: int) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_context = int(max_context)
        self._queue: list[tuple[int, ExpandRequest, list[int], list[int]]] = []
        self._tickets = 0

    def tokenize_prompt(self, prompt: Any) -> tuple[list[int], str]:
        return tokenize_prompt(self.tokenizer, prompt, len(self.tokenizer))

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    def submit(self, request: ExpandRequest) -> int:
        ids = request_ids(request, self.max_context)
        self._tickets += 1
        self._queue.append((self._tickets, request, ids, request.tree.reserve_ids(request.n)))
        return self._tickets

    def has_work(self) -> bool:
        return bool(self._queue)

    def cancel(self, ticket: int) -> bool:
        """Drop a queued expansion before it is sent. A step's batch is generated in one blocking
        call, so between steps nothing of a request is in flight: dropping it from the queue is
        all there is to stop."""
        before = len(self._queue)
        self._queue = [q for q in self._queue if q[0] != ticket]
        return len(self._queue) < before

    @abstractmethod
    def generate_all(self, batch: Sequence[tuple[ExpandRequest, list[int]]]) -> list[list[Sampled] | BaseException]:
        """For each ``(request, path token ids)``: its ``request.n`` samples, or the error that ended it."""

    def step(self) -> list[Outcome]:
        """Answer every queued expansion with one :meth:`generate_all`."""
        if not self._queue:
            return []
        started = time.perf_counter()
        batch, self._queue = self._queue, []
        results = self.generate_all([(request, ids) for _, request, ids, _ in batch])
        out: list[Outcome] = []
        for (ticket, request, _, node_ids), result in zip(batch, results):
            if isinstance(result, BaseException):
                out.append(Outcome(ticket, [], result))
                continue
            try:
                out.append(Outcome(ticket, add_children(self, request, node_ids, result)))
            except ReasonError as exc:
                out.append(Outcome(ticket, [], exc))
        self.ledger.wall_seconds += time.perf_counter() - started
        return out
