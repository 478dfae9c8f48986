"""One thread owns the engine; everything else hands it work.

The ``hf`` engine is not thread-safe and batches best when every pending request is in one queue,
so the server runs a single :class:`EngineWorker` thread that loops: take every newly submitted
request, run one engine step, hand finished outcomes back. Requests from many HTTP clients (and
from whole searches run by ``/v1/solve``) therefore share each forward.

:class:`WorkerEngine` is an :class:`~reason.core.engine.base.Engine` whose requests go through the
worker: a search strategy driven in another thread uses it exactly like an in-process engine.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from reason.core.engine.base import Engine, ExpandRequest, Outcome
from reason.core.errors import ReasonError
from reason.core.tree import Tree

T = TypeVar("T")


class ClientGone(Exception):
    """The client of a request disconnected before its answer was ready (the work was cancelled)."""


async def _disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    while (await receive()).get("type") != "http.disconnect":
        pass


async def unless_disconnected(work: Awaitable[T], receive: Callable[[], Awaitable[Any]],
                              on_disconnect: Callable[[], None] | None = None) -> T:
    """Await ``work`` while listening on the request's ASGI ``receive`` (its body already read, the
    next message is ``http.disconnect``); when the client is gone, call ``on_disconnect`` (e.g.
    :meth:`WorkerEngine.abort`), cancel ``work`` (awaits inside it, such as expansions, cancel their
    requests in the engine) and raise :class:`ClientGone`.

    A plain ASGI handler is not cancelled when its client disconnects, so without this an abandoned
    request would run to its end. (Starlette's ``Request.is_disconnected`` cannot be polled instead:
    behind an ``@app.middleware("http")`` it never sees the disconnect.)"""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself was cancelled: take the work down with it
        if on_disconnect is not None:
            on_disconnect()
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise
    finally:
        watcher.cancel()
        watcher.add_done_callback(lambda t: t.cancelled() or t.exception())  # a broken receive: gone too
    if task.done():
        return task.result()
    if on_disconnect is not None:
        on_disconnect()
    task.cancel()
    # Work in a thread ends on its own after on_disconnect; retrieve its outcome so nothing is logged.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    raise ClientGone()


class _Build:
    def __init__(self, build: Callable[[], ExpandRequest]) -> None:
        self.build = build


class _Cancel:
    def __init__(self, fut: Future) -> None:
        self.fut = fut


def _resolve(fut: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Hand a result or error to ``fut`` unless its caller cancelled it meanwhile."""
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def cancelled_error() -> ReasonError:
    """The error a cancelled request's waiters see."""
    return ReasonError("request", "was cancelled (its client disconnected)", "send it again")


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
        self.cancelled = 0  # expansion requests stopped by cancel() before they were answered
        self._thread.start()

    def submit(self, request: ExpandRequest | Callable[[], ExpandRequest]) -> Future[list[Any]]:
        """Queue ``request`` (or a function the worker calls to build it, for requests on trees only
        the worker may touch); the future resolves to its children (or raises its error)."""
        fut: Future = Future()
        self._inbox.put((_Build(request) if callable(request) else request, fut))
        return fut

    def cancel(self, fut: Future) -> None:
        """Stop the request behind ``fut`` (its client is gone): ``fut`` is cancelled now, and the
        worker cancels the request in the engine between steps (:meth:`Engine.cancel`: its
        sequences stop and their KV is freed), or drops it if the engine has not got it yet."""
        if fut.cancel():
            try:
                fut.set_running_or_notify_cancel()  # wakes concurrent.futures.wait() on it (cancel() alone does not)
            except RuntimeError:  # notified already
                pass
        self._inbox.put((_Cancel(fut), Future()))

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
        if isinstance(item, _Cancel):
            ticket = next((t for t, f in self._pending.items() if f is item.fut), None)
            if ticket is not None:
                del self._pending[ticket]
                self.engine.cancel(ticket)
                self.cancelled += 1
            return
        if isinstance(item, (ExpandRequest, _Build)):
            self.requests += 1
            if fut.cancelled():  # cancelled before the engine got it
                self.cancelled += 1
                return
            try:
                ticket = self.engine.submit(item.build() if isinstance(item, _Build) else item)
            except Exception as exc:  # noqa: BLE001 -- a bad request fails alone
                self.completed += 1
                _resolve(fut, error=exc)
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
                    _resolve(fut, error=exc)
                self.completed += len(self._pending)
                self._pending.clear()
                continue
            for outcome in outcomes:
                fut = self._pending.pop(outcome.ticket, None)
                if fut is None:
                    continue
                self.completed += 1
                _resolve(fut, outcome.children, outcome.error)


class WorkerEngine(Engine):
    """An engine whose expansions run in an :class:`EngineWorker`; text calls go to the real
    engine (tokenizers may be used from several threads).

    :meth:`abort` (from any thread) stops everything the view does: its pending requests are
    cancelled in the engine, its trees released, and the search driving it gets a cancelled
    :class:`~reason.core.errors.ReasonError` from its next :meth:`step` or :meth:`submit`."""

    def __init__(self, worker: EngineWorker) -> None:
        super().__init__()
        self.worker = worker
        self.name = worker.engine.name
        self._tickets = 0
        self._pending: dict[Future, int] = {}
        self._trees: dict[int, Tree] = {}  # trees expanded through this view, by uid, until released
        self._lock = threading.Lock()  # abort() runs in another thread than the search
        self.aborted = False

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
        with self._lock:
            if self.aborted:
                raise cancelled_error()
            self._tickets += 1
            self._pending[self.worker.submit(request)] = self._tickets
            self._trees[request.tree.uid] = request.tree
            return self._tickets

    def has_work(self) -> bool:
        return bool(self._pending)

    def cancel(self, ticket: int) -> bool:
        """Cancel the request ``ticket`` through the worker (see :meth:`EngineWorker.cancel`)."""
        with self._lock:
            fut = next((f for f, t in self._pending.items() if t == ticket), None)
            if fut is None:
                return False
            del self._pending[fut]
        self.worker.cancel(fut)
        return True

    def abort(self) -> None:
        """Stop the search using this view (its client is gone; safe from any thread): cancel
        its pending requests in the engine, refuse later ones, release its trees."""
        with self._lock:
            if self.aborted:
                return
            self.aborted = True
            pending = list(self._pending)
            trees, self._trees = list(self._trees.values()), {}
        for fut in pending:
            self.worker.cancel(fut)  # wakes a step() waiting on it
        for tree in trees:
            self.release(tree)

    def step(self) -> list[Outcome]:
        if self.aborted:
            raise cancelled_error()
        with self._lock:
            waiting = list(self._pending)
        if not waiting:
            return []
        done, _ = wait(waiting, return_when=FIRST_COMPLETED)
        if self.aborted:
            raise cancelled_error()
        out: list[Outcome] = []
        with self._lock:
            for fut in done:
                ticket = self._pending.pop(fut, None)
                if ticket is None or fut.cancelled():
                    continue
                exc = fut.exception()
                out.append(Outcome(ticket, [] if exc else fut.result(), exc))
        return out

    def release(self, tree: Tree) -> None:
        """Release ``tree`` in the worker thread, between steps (the real engine is not thread-safe)."""
        with self._lock:
            self._trees.pop(tree.uid, None)
        self.worker.call(lambda: self.worker.engine.release(tree))

