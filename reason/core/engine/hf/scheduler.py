"""Scheduling for the hf engine: what each step feeds, and where its KV goes.

The state is a :class:`Job` per expansion request (queued, then running), holding one :class:`Seq`
per child being sampled. A step's scheduling (:meth:`Scheduler.admit`, then
:meth:`Scheduler.schedule`):

1. admit queued jobs while there is room for their sequences (``max_running``), pinning their paths
   in the :class:`~reason.core.engine.hf.kv.NodeStore`;
2. plan rows (:class:`Plan`): a *head* row for each job whose path is not fully cached (it feeds the
   missing suffix of the path and yields the hidden state after the expanded node's last token),
   and a *decode* row for every running sequence (it feeds the sequence's newest token); with a
   drafter, a sequence's decode row comes from the draft planner instead
   (:mod:`reason.core.engine.hf.speculative`);
3. give every planned token a KV slot: free ones, then LRU eviction of unpinned cached subtrees,
   then preemption of the newest job (its KV is recomputed later).

After the forwards, :meth:`Scheduler.absorb_head` and :meth:`Scheduler.absorb_decode` record what
the rows computed, and :meth:`Scheduler.finished` hands back the jobs that are done. A job's ``n``
children draw their first token from the same head hidden state, so a node's last token is fed
once however many children it gets, and siblings attend to their parent's slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from reason.core.draft import Draft
from reason.core.engine.base import ExpandRequest, Outcome
from reason.core.engine.hf.batch import Row, own_slots_as_extra, pack_rows
from reason.core.engine.hf.kv import KVPool, NodeKV, NodeStore
from reason.core.engine.stops import StopChecker
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger
from reason.core.tree import Node, Tree


def count_prefill(ledger: Ledger, tree: Tree, n: int) -> None:
    """Count ``n`` prefilled tokens in the engine's ``ledger`` and in ``tree``'s own."""
    tree.ledger.prefill_tokens += n
    ledger.prefill_tokens += n


@dataclass(eq=False)
class Seq:
    """One child being sampled: its tokens so far, and the KV slots of the ones already fed."""

    job: Job
    index: int
    seed: int
    checker: StopChecker
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampling_logprobs: list[float] = field(default_factory=list)  # under the distribution drawn from
    slots: list[int] = field(default_factory=list)  # KV of tokens[:len(slots)]
    fed: int = 0  # most tokens ever fed (re-feeding below this counts as prefill)
    finish: str | None = None
    draft_rate: float | None = None  # moving average of draft tokens accepted per verification
    draft_steps: int = 0

    def append(self, token: int, logprob: float, sampling_logprob: float, ledger: Ledger) -> None:
        """Add a sampled token with its model logprob and its logprob under the sampling
        distribution, count it, and check whether the sequence is finished."""
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.sampling_logprobs.append(sampling_logprob)
        self.job.tree.ledger.generated_tokens += 1
        ledger.generated_tokens += 1
        self.finish = self.checker.check(self.tokens)

    def note_fed(self, slots: list[int], ledger: Ledger) -> None:
        """Record that the next ``len(slots)`` tokens were fed into ``slots``."""
        first = len(self.slots)
        self.slots = self.slots + slots
        # Tokens fed before (recomputed after a preemption) are prefill; the newest sampled one is not.
        refed = max(0, min(self.fed, len(self.slots)) - first)
        if refed:
            count_prefill(ledger, self.job.tree, refed)
        self.fed = max(self.fed, len(self.slots))


@dataclass(eq=False)
class Job:
    """One expansion request: its path, the ids reserved for its children, and their sequences."""

    ticket: int
    request: ExpandRequest
    path: list[Node]
    order: int
    ids: list[int]
    seqs: list[Seq] = field(default_factory=list)
    entries: list[NodeKV] | None = None  # pinned path entries while admitted
    started: bool = False  # first tokens sampled
    path_ids: list[int] = field(default_factory=list)

    @property
    def tree(self) -> Tree:
        """The tree being expanded."""
        return self.request.tree

    def live(self) -> list[Seq]:
        """The sequences still being sampled."""
        return [s for s in self.seqs if s.finish is None]


@dataclass
class Plan:
    """One planned row of a forward and what it is for."""

    row: Row
    job: Job
    seqs: list[Seq] | None = None  # None: a head row
    head_nodes: list[tuple[int, NodeKV]] = field(default_factory=list)  # (query index, entry) of node ends
    discard_last: bool = False  # head row re-feeds a cached last token only for its hidden state
    draft: Draft | None = None  # decode row of one sequence that also feeds this draft tree
    draft_context: list[int] = field(default_factory=list)  # that sequence's last tokens
    parts: list[Plan] = field(default_factory=list)  # drafted rows packed into this one (siblings)


DraftPlanner = Callable[[Job, Seq, list[int], int], Plan]
"""Plans the decode row of one sequence with a draft tree: ``(job, seq, path slots, path length)``."""


class Scheduler:
    """Admission, row planning, KV slot securing and preemption over a shared slot pool.

    Parameters:
        pool, store: the KV slot pool and the per-node KV bookkeeping over it.
        ledger: the engine's ledger (prefill is counted where KV is recorded).
        max_running: most sequences decoded at once.
        pack_siblings: decode a job's children as one tree-masked row.
        draft_planner: plans the decode row of a sequence that has a draft (None: no drafting).
    """

    def __init__(
        self,
        pool: KVPool,
        store: NodeStore,
        ledger: Ledger,
        *,
        max_running: int,
        pack_siblings: bool = False,
        draft_planner: DraftPlanner | None = None,
    ) -> None:
        self.pool = pool
        self.store = store
        self.ledger = ledger
        self.max_running = max_running
        self.pack_siblings = pack_siblings
        self.draft_planner = draft_planner
        self.waiting: list[Job] = []
        self.running: list[Job] = []
        self.done: list[Outcome] = []
        self.preemptions = 0  # jobs whose KV was dropped to make room (recomputed later)
        self._orders = 0

    # -- queues ---------------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Queue a submitted job."""
        self.waiting.append(job)

    def has_work(self) -> bool:
        """Whether any job is queued, running, or finished and not yet handed back."""
        return bool(self.waiting or self.running or self.done)

    def take_done(self) -> list[Outcome]:
        """The outcomes gathered since the last call."""
        out, self.done = self.done, []
        return out

    def admit(self) -> None:
        """Start queued jobs, oldest first, while their sequences fit under ``max_running``."""
        running = sum(len(j.live()) for j in self.running)
        while self.waiting:
            job = self.waiting[0]
            n = len(job.live())
            if self.running and running + n > self.max_running:
                break
            self.waiting.pop(0)
            if job.request.node not in job.tree:
                self.fail(job, ReasonError("node", "was pruned before it was expanded", "do not prune pending nodes"))
                continue
            self._orders += 1
            job.order = self._orders
            job.entries = self.store.pin(job.path)
            self.running.append(job)
            running += n

    # -- planning -------------------------------------------------------------------------------

    def schedule(self, drafting: bool = True) -> list[Plan]:
        """This step's rows, each with KV slots for the tokens it feeds (decode rows drafted when
        there is a draft planner and ``drafting``)."""
        plans: list[Plan] = []
        restoring: set[NodeKV] = set()
        for job in self.running:
            assert job.entries is not None
            plans.extend(self.plan_job(job, restoring, drafting))
        return self._secure_slots(plans)

    def plan_job(self, job: Job, restoring: set[NodeKV], drafting: bool = True) -> list[Plan]:
        """The rows of one running job: a head row while its path is not cached, else its decode
        rows. ``restoring`` holds the path entries that earlier head rows of this step feed."""
        assert job.entries is not None
        missing = [e for e in job.entries if not e.complete]
        needs_head = not job.started and job.entries[-1].head_hidden is None
        if missing or needs_head:
            # Two jobs sharing a missing ancestor: the later one waits a step for the first to
            # restore it, so no token is computed twice.
            if restoring.isdisjoint(missing):
                plan = self._head_plan(job)
                restoring.update(e for _, e in plan.head_nodes)
                return [plan]
            return []
        if not job.started:
            return []  # started right after this step's forwards
        return self.decode_plans(job, drafting)

    def path_slots(self, job: Job) -> list[int]:
        """The KV slots of the job's path, in order."""
        assert job.entries is not None
        return [s for e in job.entries for s in e.slots]

    def _head_plan(self, job: Job) -> Plan:
        assert job.entries is not None
        entries = job.entries
        last = entries[-1]
        # A fully cached node without its hidden state (only for hand-made paths): feed its last
        # token again and throw the duplicate KV away, leaving the cached slot (others may read it).
        discard = last.complete and last.head_hidden is None
        ctx: list[int] = []
        tokens: list[int] = []
        head_nodes: list[tuple[int, NodeKV]] = []
        pos = 0
        for e in entries:
            have = len(e.slots) - (1 if discard and e is last else 0)
            if not tokens:
                ctx.extend(e.slots[:have])
            elif have:
                raise AssertionError("cached KV after a missing span")
            missing = e.node.token_ids[have:]
            if missing:
                if not tokens:
                    pos = len(ctx)
                tokens.extend(missing)
                head_nodes.append((len(tokens) - 1, e))
        positions = list(range(pos, pos + len(tokens)))
        row = Row(tokens=tokens, positions=positions, write_slots=[], ctx=ctx, want=[i for i, _ in head_nodes])
        return Plan(row, job, None, head_nodes, discard_last=discard)

    def decode_plans(self, job: Job, drafting: bool = True) -> list[Plan]:
        """Rows feeding each live sequence's unfed tokens (drafted, or packed, where enabled)."""
        ctx = self.path_slots(job)
        base = len(ctx)
        live = job.live()
        plans: list[Plan] = []
        packable = [s for s in live if len(s.tokens) - len(s.slots) == 1]
        if self.draft_planner is not None and drafting:
            drafted = [self.draft_planner(job, s, ctx, base) for s in packable]
            if self.pack_siblings and len(drafted) > 1:
                plans.append(self._packed(job, ctx, drafted))
            else:
                plans.extend(drafted)
            live = [s for s in live if s not in packable]
            packable = []
        if self.pack_siblings and len(packable) > 1:
            row = Row(
                tokens=[s.tokens[-1] for s in packable],
                positions=[base + len(s.tokens) - 1 for s in packable],
                write_slots=[],
                ctx=ctx,
                parents=[-1] * len(packable),
                want=list(range(len(packable))),
            )
            own_slots_as_extra(row, [s.slots for s in packable], [1] * len(packable))
            plans.append(Plan(row, job, packable))
            live = [s for s in live if s not in packable]
        for s in live:
            feed = s.tokens[len(s.slots) :]
            start = base + len(s.slots)
            row = Row(
                tokens=feed,
                positions=list(range(start, start + len(feed))),
                write_slots=[],
                ctx=ctx + s.slots,
                want=[len(feed) - 1],
            )
            plans.append(Plan(row, job, [s]))
        return plans

    @staticmethod
    def _packed(job: Job, ctx: list[int], parts: list[Plan]) -> Plan:
        """One tree-masked row feeding several siblings' drafted rows (see :func:`pack_rows`)."""
        seqs = [part.seqs[0] for part in parts if part.seqs]
        row = pack_rows(ctx, [part.row for part in parts], [s.slots for s in seqs])
        return Plan(row, job, seqs, parts=parts)

    # -- KV slots -------------------------------------------------------------------------------

    def _secure_slots(self, plans: list[Plan]) -> list[Plan]:
        """Give every planned token a slot, evicting and then preempting when the budget is short."""
        while plans:
            need = sum(p.row.q for p in plans)
            self.store.evict(need)
            if self.pool.n_free >= need:
                for p in plans:
                    p.row.write_slots = self.pool.alloc(p.row.q)
                return plans
            victims = sorted({p.job for p in plans} | set(self.running), key=lambda j: j.order)
            if len(victims) <= 1:
                job = victims[0] if victims else plans[0].job
                self.fail(
                    job,
                    ReasonError(
                        "cache_tokens",
                        f"the KV budget ({self.pool.limit} tokens) cannot hold one request's path and sequences",
                        "raise cache_tokens / cache_bytes",
                    ),
                )
                plans = [p for p in plans if p.job is not job]
                continue
            victim = victims[-1]
            self.preempt(victim)
            plans = [p for p in plans if p.job is not victim]
        return plans

    def free_job_kv(self, job: Job) -> None:
        """Free the KV the job's sequences hold."""
        for s in job.seqs:
            self.pool.free(s.slots)
            s.slots = []

    def unpin(self, job: Job) -> None:
        """Unpin the job's path (it no longer runs)."""
        if job.entries is not None:
            self.store.unpin(job.entries)
            job.entries = None

    def preempt(self, job: Job) -> None:
        """Drop a running job's KV and queue it first again; it is recomputed when readmitted."""
        self.preemptions += 1
        self.free_job_kv(job)
        self.running.remove(job)
        self.unpin(job)
        self.waiting.insert(0, job)

    def cancel(self, ticket: int) -> Job | None:
        """Stop the queued or running job ``ticket`` at once: its sequences end as cancelled, their
        KV is freed and its path unpinned; it is never reported. The job, or None when no queued or
        running job has that ticket."""
        for queue in (self.waiting, self.running):
            for job in queue:
                if job.ticket == ticket:
                    queue.remove(job)
                    for s in job.live():
                        s.finish = "cancelled"
                    self.free_job_kv(job)
                    self.unpin(job)
                    return job
        return None

    def fail(self, job: Job, error: BaseException) -> None:
        """End a job with ``error``, freeing what it holds."""
        self.free_job_kv(job)
        if job in self.running:
            self.running.remove(job)
        self.unpin(job)
        self.done.append(Outcome(job.ticket, [], error))

    # -- results --------------------------------------------------------------------------------

    def absorb_head(self, plan: Plan, hidden: torch.Tensor) -> None:
        """Record a head row's KV and the hidden states after each node it completed."""
        assert plan.job.entries is not None
        slots = plan.row.write_slots
        at = 0
        tree = plan.job.tree
        last = plan.job.entries[-1]
        for (_, entry), h in zip(plan.head_nodes, hidden):
            node = entry.node
            have = len(entry.slots) - (1 if plan.discard_last and entry is last else 0)
            n_new = len(node.token_ids) - have
            new_slots = slots[at : at + n_new]
            at += n_new
            fresh = max(0, len(node.token_ids) - max(entry.fed, have)) if entry.sampled else 0
            count_prefill(self.ledger, tree, n_new - fresh)
            if entry is last and plan.discard_last:
                self.pool.free(new_slots[-1:])  # the token's KV is already cached in another slot
                new_slots = new_slots[:-1]
            self.store.set_slots(entry, entry.slots + new_slots)
            entry.head_hidden = h.clone()

    def absorb_decode(self, plan: Plan) -> None:
        """Record the KV slots a plain decode row wrote for its sequences."""
        assert plan.seqs is not None
        slots = plan.row.write_slots
        if len(plan.seqs) > 1 or plan.row.parents is not None:  # packed siblings: one token each
            for s, slot in zip(plan.seqs, slots):
                s.note_fed([slot], self.ledger)
        else:
            plan.seqs[0].note_fed(slots, self.ledger)

    def head_hidden(self, job: Job) -> torch.Tensor | None:
        """The hidden state the job's children draw their first token from, once it is computed."""
        assert job.entries is not None
        last = job.entries[-1]
        return last.head_hidden if last.complete else None

    def finished(self) -> Iterator[Job]:
        """Take the running jobs that are done (every child finished, or ``first`` of them) out of
        the running set one at a time, each retired (:meth:`retire`) just before it is yielded."""
        for job in list(self.running):
            if not job.started:
                continue
            first = job.request.first
            done = sum(s.finish is not None for s in job.seqs)
            if job.live() and not (first is not None and done >= first):
                continue
            self.retire(job)
            yield job

    def retire(self, job: Job) -> None:
        """Cancel a done job's unfinished sequences (the winners are known) and stop running it."""
        for s in job.live():
            s.finish = "cancelled"
            self.pool.free(s.slots)
            s.slots = []
        self.running.remove(job)
