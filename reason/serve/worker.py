"""One thread owns the engine; everything else hands it work.

The ``hf`` engine is not thread-safe and batches best when every pending request is in one queue,
so the server runs a single :class:`EngineWorker` thread that loops: take every newly submitted
request, run one engine step, hand finished outcomes back. Requests from many HTTP clients (and
from whole searches run by ``/v1/solve``) therefore share each forward.

:class:`WorkerEngine` is an :class:`~reason.core.engine.base.Engine` whose requests go through the
worker: a search strategy driven in another thread uses it exactly like an in-process engine.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from reason.core.engine.base import Engine, ExpandRequest, Outcome
from reason.core.tree import Tree

T = TypeVar("T")


class _Build:
    def __init__(self, build: Callable[[], ExpandRequest]) -> None:
        self.build = build


class EngineWorker:
    """Runs ``engine`` in a thread of its own (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inbox: queue.SimpleQueue[tuple[Any, Future]] = queue.SimpleQueue()
        self._pending: dict[int, Future] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="reason-engine", daemon=True)
        self.requests = 0  # expansion requests accepted
        self.completed = 0  # expansion requests answered (children or error)
        self._thread.start()

    def submit(self, request: ExpandRequest | Callable[[], ExpandRequest]) -> Future[list[Any]]:
        """Queue ``request`` (or a function the worker calls to build it, for requests on trees only
        the worker may touch); the future resolves to its children (or raises its error)."""
        fut: Future = Future()
        self._inbox.put((_Build(request) if callable(request) else request, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in the worker thread between steps (for engine calls other than expansion)."""
        fut: Future = Future()
        self._inbox.put((fn, fut))
        return fut

    def close(self) -> None:
        self._stopping = True
        self._inbox.put((None, Future()))
        self._thread.join(timeout=30)

    def _take(self, item: Any, fut: Future) -> None:
        if item is None:
            return
        if isinstance(item, (ExpandRequest, _Build)):
            self.requests += 1
            try:
                ticket = self.engine.submit(item.build() if isinstance(item, _Build) else item)
            except Exception as exc:  # noqa: BLE001 -- a bad request fails alone
                self.completed += 1
                fut.set_exception(exc)
                return
            self._pending[ticket] = fut
            return
        try:
            fut.set_result(item())
        except Exception as exc:  # noqa: BLE001 -- handed to the caller
            fut.set_exception(exc)

    def _loop(self) -> None:
        while not self._stopping:
            if not self.engine.has_work():
                self._take(*self._inbox.get())  # idle: block until something arrives
            while True:
                try:
                    self._take(*self._inbox.get_nowait())
                except queue.Empty:
                    break
            if not self.engine.has_work():
                continue
            try:
                outcomes = self.engine.step()
            except Exception as exc:  # noqa: BLE001 -- the engine broke: fail what is in flight, keep serving
                for fut in self._pending.values():
                    fut.set_exception(exc)
                self.completed += len(self._pending)
                self._pending.clear()
                continue
            for outcome in outcomes:
                fut = self._pending.pop(outcome.ticket, None)
                if fut is None:
                    continue
                self.completed += 1
                if outcome.error is not None:
                    fut.set_exception(outcome.error)
                else:
                    fut.set_result(outcome.children)


class WorkerEngine(Engine):
    """An engine whose expansions run in an :class:`EngineWorker`; text calls go to the real
    engine (tokenizers may be used from several threads)."""

    def __init__(self, worker: EngineWorker) -> None:
        super().__init__()
        self.worker = worker
        self.name = worker.engine.name
        self._tickets = 0
        self._pending: dict[Future, int] = {}

    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        return self.worker.engine.tokenizer

    @property
    def max_context(self) -> int | None:  # type: ignore[override]
        return self.worker.engine.max_context

    def has_chat_template(self) -> bool:
        return self.worker.engine.has_chat_template()

    def tokenize_prompt(self, prompt: Any) -> tuple[list[int], str]:
        return self.worker.engine.tokenize_prompt(prompt)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.worker.engine.decode(token_ids)

    def submit(self, request: ExpandRequest) -> int:
        request.validate()
        self._tickets += 1
        self._pending[self.worker.submit(request)] = self._tickets
        return self._tickets

    def has_work(self) -> bool:
        return bool(self._pending)

    def step(self) -> list[Outcome]:
        if not self._pending:
            return []
        done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
        out: list[Outcome] = []
        for fut in done:
            ticket = self._pending.pop(fut)
            exc = fut.exception()
            out.append(Outcome(ticket, [] if exc else fut.result(), exc))
        return out

    def release(self, tree: Tree) -> None:
        """Release ``tree`` in the worker thread, between steps (the real engine is not thread-safe)."""
        self.worker.call(lambda: self.worker.engine.release(tree))

