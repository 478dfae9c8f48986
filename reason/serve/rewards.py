"""Scoring as a service: ``GET /v1/rewards`` lists the server's PRMs and value models, and
``POST /v1/rewards`` scores items with one of them.

A PRM request is ``{"model": NAME, "task": "prm", "items": [{"question", "steps": [...]}, ...]}``
and gets ``{"data": [{"index", "scores": [one per step]}], "usage": {"prompt_tokens"}}``; a value
request has ``"task": "value"`` and items ``{"question", "partial"}``, and gets ``{"index",
"value"}`` rows. The scorers are the ones the server was started with (``reason serve --prm/--value
NAME[=PATH]``, the same allow-list ``/v1/solve`` uses), and the endpoint sits behind the same API key.

Scoring is batched like completions: one :class:`ScoreBatcher` thread owns the scorers, and every
request that arrived while it was busy is served by one ``score_batch`` / ``value_batch`` call per
scorer, so concurrent clients share forwards. ``/v1/solve`` searches, each in its own thread, score
through the same thread (:func:`owned`): no scorer is ever called from two threads at once, and
concurrent searches share its calls with ``/v1/rewards`` clients. ``rewards.remote`` is the client.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from reason.core.errors import ReasonError
from reason.serve.worker import unless_disconnected
from rewards.base import ProcessRewardModel, StepScores, ValueModel, Values


class RewardItem(BaseModel):
    """One item: the question with its ``steps`` (PRM) or its ``partial`` solution (value model)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str
    steps: list[str] | None = None
    partial: str | None = None


class RewardsRequest(BaseModel):
    """``POST /v1/rewards``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    task: Literal["prm", "value"] = "prm"
    items: list[RewardItem] = Field(min_length=1)


@dataclass
class _Job:
    scorer: Any
    task: str
    items: list[Any]
    future: Future = field(default_factory=Future)


class ScoreBatcher:
    """One thread that scores every queued job, all jobs of one scorer in one model call.

    ``calls`` counts the model calls made, ``jobs`` the requests served."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self.calls = 0
        self.jobs = 0
        self._thread = threading.Thread(target=self._loop, name="reason-rewards", daemon=True)
        self._thread.start()

    def submit(self, scorer: Any, task: str, items: Sequence[Any]) -> Future:
        """Score ``items`` (``(question, steps)`` for ``task="prm"``, ``(question, partial)`` for
        ``"value"``) with ``scorer``; the future holds ``(rows, tokens)``."""
        job = _Job(scorer, task, list(items))
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the thread after the jobs queued so far."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this round
                    break
                jobs.append(job)
            groups: dict[tuple[int, str], list[_Job]] = {}
            for job in jobs:
                if job.future.set_running_or_notify_cancel():
                    groups.setdefault((id(job.scorer), job.task), []).append(job)
            for group in groups.values():
                self._run(group)

    def _run(self, group: list[_Job]) -> None:
        items = [item for job in group for item in job.items]
        try:
            if group[0].task == "prm":
                result = group[0].scorer.score_batch(items)
                rows, tokens = result.scores, result.tokens
            else:
                result = group[0].scorer.value_batch(items)
                rows, tokens = result.values, result.tokens
            self.calls += 1
        except BaseException as exc:  # noqa: BLE001 -- handed to every waiting request
            for job in group:
                job.future.set_exception(exc)
            return
        at = 0
        for job in group:
            n = len(job.items)
            self.jobs += 1
            job.future.set_result((rows[at:at + n], round(tokens * n / len(items))))
            at += n


class OwnedPRM(ProcessRewardModel):
    """A PRM whose model calls run in the batcher's thread, batched with every other request's."""

    def __init__(self, inner: ProcessRewardModel, batcher: ScoreBatcher) -> None:
        self.inner, self.batcher = inner, batcher
        self.name = getattr(inner, "name", "prm")
        self.incremental = getattr(inner, "incremental", True)

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        rows, tokens = self.batcher.submit(self.inner, "prm", items).result()
        return StepScores(scores=rows, tokens=tokens)


class OwnedValue(ValueModel):
    """A value model whose calls run in the batcher's thread, batched with every other request's."""

    def __init__(self, inner: ValueModel, batcher: ScoreBatcher) -> None:
        self.inner, self.batcher = inner, batcher
        self.name = getattr(inner, "name", "value")

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        rows, tokens = self.batcher.submit(self.inner, "value", items).result()
        return Values(values=rows, tokens=tokens)


def owned(scorer: Any, batcher: ScoreBatcher) -> Any:
    """``scorer`` (a PRM, a value model or None) with its calls made in ``batcher``'s thread."""
    if scorer is None:
        return None
    if hasattr(scorer, "score_batch"):
        return OwnedPRM(scorer, batcher)
    if hasattr(scorer, "value_batch"):
        return OwnedValue(scorer, batcher)
    raise ReasonError("scorer", f"{type(scorer).__name__} is neither a PRM nor a value model",
                      "start the server with PRMs (--prm) and value models (--value)")


def register_rewards(app: FastAPI, server: Any) -> ScoreBatcher:
    """Add ``/v1/rewards`` to ``app`` over ``server``'s scorers (``server.prms``, ``server.values``,
    ``server.limits``); returns the batcher (close it when the app stops)."""
    batcher = ScoreBatcher()
    app.state.rewards = batcher  # its counters: model calls made, requests served

    @app.get("/v1/rewards")
    async def rewards_list() -> dict[str, Any]:
        data = [{"id": name, "object": "scorer", "task": "prm", "incremental": bool(getattr(prm, "incremental", False))}
                for name, prm in sorted(server.prms.items())]
        data += [{"id": name, "object": "scorer", "task": "value"} for name in sorted(server.values)]
        return {"object": "list", "data": data, "max_items": server.limits.prompts}

    @app.post("/v1/rewards")
    async def rewards(body: RewardsRequest, request: Request) -> dict[str, Any]:
        offered = server.prms if body.task == "prm" else server.values
        if body.model not in offered:
            names = ", ".join(sorted(offered)) or "none"
            raise ReasonError("model", f"{body.model[:80]!r} is not a {body.task} this server offers (it offers: "
                              f"{names})", f"name one of those (reason serve --{body.task} NAME[=PATH] sets them)")
        server.limits.check("items", len(body.items), "prompts", "items")
        items: list[Any] = []
        for k, item in enumerate(body.items):
            want, other = ("steps", "partial") if body.task == "prm" else ("partial", "steps")
            if getattr(item, want) is None or getattr(item, other) is not None:
                raise ReasonError(f"items.{k}", f"a {body.task} item has 'question' and '{want}'", f"send {want}, not {other}")
            size = len(item.question) + (sum(map(len, item.steps)) if item.steps is not None else len(item.partial or ""))
            server.limits.check(f"items.{k}", size, "prompt_chars", "characters")
            if body.task == "prm" and not item.steps:
                raise ReasonError(f"items.{k}.steps", "is empty", "give at least one step to score")
            items.append((item.question, item.steps) if body.task == "prm" else (item.question, item.partial))
        fut = batcher.submit(offered[body.model], body.task, items)
        rows, tokens = await unless_disconnected(asyncio.wrap_future(fut), request.receive)
        key = "scores" if body.task == "prm" else "value"
        return {"object": "list", "model": body.model, "task": body.task,
                "data": [{"index": i, "object": "reward", key: row} for i, row in enumerate(rows)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return batcher
