"""The hf engine without prefix caching: the baseline that benchmarks compare the engine against.

:class:`NoPrefixCacheEngine` is :class:`~reason.core.engine.hf.engine.HFEngine` with the
:class:`NoPrefixCacheScheduler` policy: every expansion prefills its whole path into a private copy
of the path's KV (counted in ``prefill_tokens``, whatever other jobs or earlier expansions
computed), its children decode against that copy (siblings of one expansion still share it), and
all of it, the children's KV included, is dropped when the expansion finishes. Nothing is ever
cached in the node store, so the pool is empty between expansions. The tokens are the same as the
cached engine's, greedy or seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from reason.core.engine.hf.batch import Row
from reason.core.engine.hf.engine import HFEngine
from reason.core.engine.hf.kv import NodeKV
from reason.core.engine.hf.scheduler import (
    Job,
    Plan,
    Scheduler,
    count_prefill,
)


@dataclass
class _PrivatePath:
    slots: list[int]  # KV of the job's whole path
    hidden: torch.Tensor  # hidden state after the path's last token


class NoPrefixCacheScheduler(Scheduler):
    """Scheduling where each job owns a private, freshly prefilled copy of its path's KV."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._private: dict[Job, _PrivatePath] = {}

    def plan_job(self, job: Job, restoring: set[NodeKV], drafting: bool = True) -> list[Plan]:
        """A head row feeding the whole path until the job has its private copy, then its decode rows."""
        if job not in self._private:
            assert job.entries is not None
            tokens = [t for n in job.path for t in n.token_ids]
            row = Row(tokens=tokens, positions=list(range(len(tokens))), write_slots=[], ctx=[], want=[len(tokens) - 1])
            return [Plan(row, job, None, [(len(tokens) - 1, job.entries[-1])])]
        return self.decode_plans(job, drafting) if job.started else []

    def path_slots(self, job: Job) -> list[int]:
        """The slots of the job's private copy of its path."""
        return self._private[job].slots

    def absorb_head(self, plan: Plan, hidden: torch.Tensor) -> None:
        """Keep the head row's KV and hidden state as the job's private path; all of it is prefill
        but a sampled node's last token, which was never fed before."""
        job = plan.job
        assert job.entries is not None
        last = job.entries[-1]
        fresh = 1 if last.sampled and last.fed < len(last.node.token_ids) else 0
        count_prefill(self.ledger, job.tree, plan.row.q - fresh)
        last.fed = len(last.node.token_ids)
        self._private[job] = _PrivatePath(list(plan.row.write_slots), hidden[0].clone())

    def head_hidden(self, job: Job) -> torch.Tensor | None:
        """The hidden state after the job's private path, once it is computed."""
        private = self._private.get(job)
        return None if private is None else private.hidden

    def free_job_kv(self, job: Job) -> None:
        """Free the sequences' KV and the job's private path."""
        super().free_job_kv(job)
        private = self._private.pop(job, None)
        if private is not None:
            self.pool.free(private.slots)

    def retire(self, job: Job) -> None:
        """Stop running a done job and drop all its KV: nothing is cached for later expansions."""
        super().retire(job)
        self.free_job_kv(job)


class NoPrefixCacheEngine(HFEngine):
    """:class:`~reason.core.engine.hf.engine.HFEngine` without prefix caching (see the module
    docstring); it takes the same options. It is the baseline benchmarks compare prefix caching
    against, so it drafts only when asked to (``draft="suffix"``, ...)."""

    scheduler_class = NoPrefixCacheScheduler
    default_drafter = None
