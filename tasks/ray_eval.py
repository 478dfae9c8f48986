"""Evaluation runs across a Ray cluster (``reason eval ... --ray [ADDRESS]``; Ray is the ``ray`` extra).

The problems of a run go to Ray actors, one engine per actor (each loads its own policy, scorers and
verifier through ``setup``, so nothing heavy crosses the wire), with GPUs requested per actor when
the engine runs on GPU. The driver does everything that decides *which* records exist exactly as a
local run does (:func:`tasks.evaluation.evaluate`): it holds the run file's lock, reads the records
already there (resume), takes the positions of its shard, and cuts each budget's remaining problems
into the same ``batch_size`` chunks. Each chunk is one actor call that runs the local
:func:`~tasks.evaluation.evaluate` on those problems and returns their records, which the driver
appends to the file (flushed and synced) as they arrive. Seeds depend only on the run's seed and
the problem's id, so the records equal a local run's record for record, a file can be resumed or
merged by either kind of run, and a killed run loses at most the chunks in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reason.core.errors import ReasonError
from search.domain import Problem
from tasks.evaluation import EvalConfig, EvalRecord, evaluate, read_records, run_lock

Setup = Callable[[list[Problem]], tuple[Any, dict[str, Any]]]
"""Run on each actor: the suite's problems -> the engine and the other :func:`evaluate` arguments
(``domain``, ``verifier``, ``prm``, ``value``, ``prompts`` for every problem, or None)."""


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise ReasonError("ray", "needs Ray", "pip install 'reason[ray]'") from None
    return ray


def connect(address: str | None) -> Any:
    """Ray, connected: the running session if this process has one, else ``ray.init(address)``
    (``None`` or ``"local"``: a cluster started here, or the one ``RAY_ADDRESS`` names)."""
    ray = import_ray()
    if not ray.is_initialized():
        target = None if address in (None, "", "local") else address
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise ReasonError("ray", f"cannot connect to the Ray cluster at {address!r} ({exc})",
                              "start one (ray start --head) or give its address, e.g. --ray 10.0.0.1:6379") from None
    return ray


class EvalWorker:
    """One Ray actor's state: an engine and the evaluation arguments built by ``setup``."""

    def __init__(self, setup: Setup, problems: list[Problem], config: EvalConfig) -> None:
        self.problems, self.config = problems, config
        self.engine, kwargs = setup(problems)
        self.prompts = kwargs.pop("prompts", None)
        self.kwargs = kwargs

    def run(self, positions: list[int], budget: int, save_trees: bool = False) -> list[dict[str, Any]]:
        """The records of the problems at ``positions`` (suite positions) at ``budget``, as dicts
        (with ``save_trees``, each with its search and tree)."""
        chunk = [self.problems[i] for i in positions]
        prompts = None if self.prompts is None else [self.prompts[i] for i in positions]
        records = evaluate(self.engine, chunk, self.config, [budget], prompts=prompts, out=None,
                           batch_size=len(chunk), save_trees=save_trees, **self.kwargs)
        for record in records:
            record.index = positions[record.index]  # evaluate numbered the chunk from 0
        return [r.model_dump(mode="json") for r in records]


def default_workers(ray: Any, gpus: float, cpus: float) -> int:
    """How many actors the cluster holds: its GPUs over ``gpus`` (when on GPU), else its CPUs over ``cpus``."""
    resources = ray.cluster_resources()
    have = resources.get("GPU", 0.0) / gpus if gpus else resources.get("CPU", 1.0) / cpus
    return max(1, int(have))


def evaluate_on_ray(problems: Sequence[Problem], config: EvalConfig, budgets: Sequence[int], *, setup: Setup,
                    address: str | None = None, workers: int | None = None, gpu: bool | None = None,
                    cpus_per_worker: float = 1.0, out: str | Path | None = None,
                    shard: tuple[int, int] | None = None, batch_size: int = 32,
                    on_record: Callable[[EvalRecord], None] | None = None,
                    save_trees: bool = False) -> list[EvalRecord]:
    """Run the evaluation on Ray actors (see the module docstring); returns every record of the run
    (those found in ``out`` and the new ones). ``gpu``: one GPU per actor (None: when the cluster
    has GPUs); ``workers``: actors (default and at most: as many as the cluster holds; at most one per
    chunk); ``save_trees``: each record keeps its search and tree, built on the worker."""
    if workers is not None and workers < 1:
        raise ReasonError("ray-workers", f"must be at least 1 (got {workers})", "use e.g. --ray-workers 2")
    if batch_size < 1:
        raise ReasonError("batch-size", f"must be at least 1 (got {batch_size})", "use e.g. 32")
    if out is None:
        return _drive(problems, config, budgets, setup, address, workers, gpu, cpus_per_worker, None, shard,
                      batch_size, on_record, save_trees)
    with run_lock(out):
        return _drive(problems, config, budgets, setup, address, workers, gpu, cpus_per_worker, out, shard,
                      batch_size, on_record, save_trees)


def _drive(problems: Sequence[Problem], config: EvalConfig, budgets: Sequence[int], setup: Setup,
           address: str | None, workers: int | None, gpu: bool | None, cpus: float, out: str | Path | None,
           shard: tuple[int, int] | None, batch_size: int,
           on_record: Callable[[EvalRecord], None] | None, save_trees: bool = False) -> list[EvalRecord]:
    records = read_records(out, config.digest()) if out is not None else []
    done = {r.key() for r in records}
    positions = [i for i in range(len(problems)) if shard is None or i % shard[1] == shard[0]]
    chunks: list[tuple[list[int], int]] = []
    for budget in budgets:
        todo = [i for i in positions if (budget, problems[i].id) not in done]
        chunks += [(todo[s:s + batch_size], budget) for s in range(0, len(todo), batch_size)]
    if not chunks:
        return records
    ray = connect(address)
    from ray.util import ActorPool

    gpus = 1.0 if (gpu if gpu is not None else ray.cluster_resources().get("GPU", 0.0) > 0) else 0.0
    room = default_workers(ray, gpus, cpus)  # more actors than the cluster holds would wait forever
    count = min(workers or room, room, len(chunks))
    actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(EvalWorker)
    actors = [actor.remote(setup, list(problems), config) for _ in range(count)]
    sink = open(out, "a", encoding="utf-8") if out is not None else None
    try:
        for batch in _results(ray, ActorPool(actors).map_unordered(lambda a, c: a.run.remote(*c, save_trees), chunks)):
            for data in batch:
                record = EvalRecord.model_validate(data)
                if sink is not None:
                    sink.write(record.model_dump_json() + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())
                records.append(record)
                if on_record is not None:
                    on_record(record)
    finally:
        if sink is not None:
            sink.close()
        for a in actors:
            ray.kill(a)
    return records


def _results(ray: Any, results: Any) -> Any:
    """``results`` as they come, with a worker's one-line error raised as itself (not wrapped in
    Ray's task error, whose text carries the remote traceback)."""
    try:
        yield from results
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ReasonError):
            raise ReasonError(cause.field, cause.problem, cause.fix) from None
        raise
