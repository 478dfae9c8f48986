"""The async layer strategies are written against.

A strategy is a coroutine over a :class:`SearchContext`: it awaits ``ctx.expand(...)``,
``ctx.score(...)`` and ``ctx.values(...)``. A :class:`Runner` drives many such coroutines, for many
problems, over one engine: each time every coroutine is blocked, the expansions they submitted go
to the engine, which advances all of them together (continuous batching), and a finished request
wakes its coroutine at once so its next request joins the batch at the following step.

Scorer calls batch the same way: ``ctx.score`` queues the nodes with the runner, and the runner
hands every queued call of one scorer, from every problem, to that scorer in one
:meth:`~reason.core.scorers.TreeScorer.score_many` call. It does so when the engine has nothing
else to do or when at least half of the live searches wait on a scorer (waiting longer would idle those searches while
the rest decode; scoring sooner would split the batch).

:meth:`Runner.run` is the synchronous wrapper (it also works when called from inside a running event
loop, e.g. a notebook).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any, TypeVar

from reason.core.engine.base import Engine, ExpandRequest, Sampling, Stop
from reason.core.errors import ReasonError
from reason.core.scorers import PRMScorer, TreeScorer, ValueScorer
from reason.core.seeding import derive_seed
from reason.core.tree import Node, Tree

T = TypeVar("T")


class SearchContext:
    """One problem's handle for a strategy: its tree, the engine (through the runner) and a seeded
    random stream. Every random choice a strategy makes should come from :attr:`rng` or
    :meth:`next_seed`, so the same seed gives the same tree.

    The tree never pays twice for one state: :meth:`expand` merges every new child into an older
    sibling holding the same tokens (:meth:`~reason.core.tree.Tree.merge`), or the same
    ``state_key(text)`` when the domain declares one; ``merge=False`` keeps duplicates (to measure
    what merging saves). ``token_budget`` caps the tokens generated for this tree: each request's
    samples are capped to their share of what is left (waiting, when nothing is left, for requests
    in flight to give back what they did not use), and a request that still cannot get one token
    per sample returns no children. ``sampling`` is the run's filters and penalties (top-p, top-k,
    min-p, repetition/presence/frequency penalties): every request's sampling takes those it
    leaves off (:meth:`~reason.core.engine.base.Sampling.under`)."""

    def __init__(
        self,
        runner: Runner,
        tree: Tree,
        seed: int = 0,
        *,
        prm: PRMScorer | None = None,
        value: ValueScorer | None = None,
        merge: bool = True,
        state_key: Callable[[str], Hashable] | None = None,
        token_budget: int | None = None,
        sampling: Sampling | None = None,
    ) -> None:
        self.runner = runner
        self.sampling = sampling
        self.tree = tree
        self.seed = seed
        self.rng = random.Random(seed)
        self.prm = prm
        self.value = value
        self.merge = merge
        self.state_key = state_key
        self.token_budget = token_budget
        self._reserved = 0  # tokens promised to requests in flight
        self._waiting: list[asyncio.Future[None]] = []  # requests waiting for promised tokens back
        self._seeds = 0
        self._t0 = time.perf_counter()

    @property
    def started(self) -> float:
        """When the context was made (``time.perf_counter``)."""
        return self._t0

    @property
    def engine(self) -> Engine:
        return self.runner.engine

    def next_seed(self) -> int:
        """A fresh seed for a request, derived from the context's seed and a counter."""
        self._seeds += 1
        return derive_seed(self.seed, self._seeds)

    async def expand(
        self,
        node: Node,
        n: int = 1,
        stop: Stop | None = None,
        sampling: Sampling | None = None,
        first: int | None = None,
    ) -> list[Node]:
        """Sample ``n`` children of ``node`` (see :class:`~reason.core.engine.base.ExpandRequest`;
        ``first`` returns as soon as that many are done). Returns one entry per sample, in id order:
        a sample identical to a sibling (older, or earlier in this request) is merged into it, so
        its entry is that sibling, whose :attr:`~reason.core.tree.Node.count` grew by one; use
        ``dict.fromkeys(children)`` for the distinct states. Returns ``[]`` when the token budget
        cannot give every sample one token once the requests in flight are done. A sampling without a seed gets the next seed of this
        context."""
        stop = stop or Stop()
        sampling = (sampling or Sampling()).under(self.sampling)
        if sampling.seed is None:  # drawn before any wait below, so seeds follow the call order
            sampling = sampling.model_copy(update={"seed": self.next_seed()})
        reserved = 0
        if self.token_budget is not None:
            share = await self._share(n)
            if share < 1:
                return []
            if stop.max_tokens is None or stop.max_tokens > share:
                stop = stop.model_copy(update={"max_tokens": share})
            reserved = n * (stop.max_tokens or share)
            self._reserved += reserved
        request = ExpandRequest(self.tree, node, n, stop, sampling, first)
        try:
            children = await self.runner.submit(request)
        finally:
            if reserved:
                self._reserved -= reserved
                self._wake()
        self.tree.ledger.wall_seconds = time.perf_counter() - self._t0
        children = sorted(children, key=lambda c: c.id)
        if self.merge:
            key = None if self.state_key is None else (lambda c, f=self.state_key: f(c.text))
            children = self.tree.merge(children, key)
        return children

    async def _share(self, n: int) -> int:
        """Tokens each of ``n`` samples may generate under the token budget: an equal share of what
        is neither generated nor promised to requests in flight. A request reserves its samples'
        whole cap (a step's cap is far above what a step uses), so when nothing is left but
        requests are in flight, this waits for them to give back what they did not use: requests
        issued together (``asyncio.gather``) take turns instead of the first one starving the rest."""
        assert self.token_budget is not None
        while True:
            left = self.token_budget - self.tree.ledger.generated_tokens - self._reserved
            if left // n >= 1 or self._reserved == 0:
                return left // n
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter

    def _wake(self) -> None:
        """Tell the requests waiting in :meth:`_share` that promised tokens came back."""
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def tokens_left(self) -> int | None:
        """Tokens this tree may still generate under the token budget (None without one)."""
        if self.token_budget is None:
            return None
        return max(0, self.token_budget - self.tree.ledger.generated_tokens - self._reserved)

    async def score(self, nodes: Sequence[Node]) -> list[float]:
        """The PRM's aggregated scores of ``nodes`` (cached per node; charged to the tree's ledger),
        batched with every other problem's PRM calls (see the module docstring)."""
        if self.prm is None:
            raise ReasonError("prm", "this search needs a PRM", "pass --prm NAME[=PATH]")
        return await self.runner.score(self.prm, self.tree, nodes)

    async def values(self, nodes: Sequence[Node]) -> list[float]:
        """The value model's estimates for ``nodes`` (cached per node; charged to the ledger),
        batched like :meth:`score`."""
        if self.value is None:
            raise ReasonError("value", "this search needs a value model", "pass --value NAME[=PATH]")
        return await self.runner.score(self.value, self.tree, nodes)

    async def expand_all(
        self, requests: Sequence[tuple[Node, int]], stop: Stop | None = None, sampling: Sampling | None = None
    ) -> list[list[Node]]:
        """Expand several ``(node, n)`` pairs at once; children per pair, in order."""
        return list(await asyncio.gather(*(self.expand(node, n, stop, sampling) for node, n in requests)))


class Runner:
    """Drives strategy coroutines over one engine, batching their requests (see the module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._futures: dict[int, asyncio.Future] = {}
        self._submitted = 0
        self._wake: asyncio.Event | None = None
        # Queued scorer calls, by scorer: (scorer, [(tree, nodes, future), ...]).
        self._scoring: dict[int, tuple[TreeScorer, list[tuple[Tree, list[Node], asyncio.Future]]]] = {}

    def context(
        self,
        prompt: Any = None,
        *,
        tree: Tree | None = None,
        seed: int = 0,
        meta: dict[str, Any] | None = None,
        **options: Any,
    ) -> SearchContext:
        """A context over a new tree for ``prompt`` (text, chat messages or token ids), or over
        ``tree``; ``options`` are :class:`SearchContext`'s (``prm=`` / ``value=`` node scorers,
        ``merge``, ``state_key``, ``token_budget``, ``sampling``)."""
        if tree is None:
            tree = self.engine.new_tree(prompt, meta=meta)
        return SearchContext(self, tree, seed, **options)

    def submit(self, request: ExpandRequest) -> asyncio.Future[list[Node]]:
        """Queue ``request`` with the engine; the future resolves to its children."""
        loop = asyncio.get_running_loop()
        ticket = self.engine.submit(request)
        fut = loop.create_future()
        self._futures[ticket] = fut
        self._submitted += 1
        if self._wake is not None:
            self._wake.set()
        return fut

    def score(self, scorer: TreeScorer, tree: Tree, nodes: Sequence[Node]) -> asyncio.Future[list[float]]:
        """Queue a scorer call for ``nodes`` of ``tree``; the future resolves to their scores when
        the runner next flushes ``scorer``'s queue (see the module docstring)."""
        fut = asyncio.get_running_loop().create_future()
        self._scoring.setdefault(id(scorer), (scorer, []))[1].append((tree, list(nodes), fut))
        self._submitted += 1
        if self._wake is not None:
            self._wake.set()
        return fut

    def _queued_scores(self) -> int:
        return sum(len(calls) for _, calls in self._scoring.values())

    def _flush_scores(self) -> None:
        queued, self._scoring = self._scoring, {}
        for scorer, calls in queued.values():
            try:
                results = scorer.score_many([(tree, nodes) for tree, nodes, _ in calls])
            except Exception as exc:  # every waiting search sees the scorer's error
                for _, _, fut in calls:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), scores in zip(calls, results):
                if not fut.done():
                    fut.set_result(list(scores))

    async def _settle(self) -> None:
        # Let every coroutine that can run do so until it blocks; chains of tasks take a few rounds.
        quiet = 0
        while quiet < 2:
            before = self._submitted
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._submitted == before else 0

    async def gather(self, coros: Sequence[Awaitable[T]], return_exceptions: bool = False) -> list[T]:
        """Run ``coros`` to completion together; results in order (exceptions returned in place
        when ``return_exceptions``)."""
        self._wake = asyncio.Event()
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            while True:
                await self._settle()
                pending = [t for t in tasks if not t.done()]
                if not pending:
                    break
                queued = self._queued_scores()
                if queued and (not self.engine.has_work() or 2 * queued >= len(pending)):
                    self._flush_scores()
                    continue
                if self.engine.has_work():
                    for outcome in self.engine.step():
                        fut = self._futures.pop(outcome.ticket, None)
                        if fut is None or fut.done():
                            continue
                        if outcome.error is not None:
                            fut.set_exception(outcome.error)
                        else:
                            fut.set_result(outcome.children)
                    continue
                # Nothing for the engine: the coroutines wait on something else (a scorer in a
                # thread, a timer). Sleep until one finishes or submits a request.
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(pending + [waker], return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            self._scoring = {}
        for t in tasks:  # retrieve every failure, so none is logged as "never retrieved" below
            if t.done() and not t.cancelled():
                t.exception()
        results: list[Any] = []
        for t in tasks:
            if t.cancelled():
                results.append(asyncio.CancelledError())
            elif t.exception() is not None:
                if not return_exceptions:
                    raise t.exception()
                results.append(t.exception())
            else:
                results.append(t.result())
        return results

    def run(self, coros: Sequence[Coroutine[Any, Any, T]], return_exceptions: bool = False) -> list[T]:
        """Synchronous :meth:`gather`; safe to call with or without a running event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.gather(coros, return_exceptions))
        box: dict[str, Any] = {}

        def worker() -> None:
            try:
                box["out"] = asyncio.run(self.gather(coros, return_exceptions))
            except BaseException as exc:  # re-raised in the caller's thread
                box["err"] = exc

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

