"""The ``hf`` backend: transformers + torch in process, with continuous batching over a shared
KV slot pool.

:class:`HFEngine` takes requests (:meth:`HFEngine.submit`) and advances all of them together in
:meth:`HFEngine.step`, orchestrating three parts:

* :mod:`reason.core.engine.hf.scheduler`: jobs and sequences, admission, row planning, KV slots,
  eviction and preemption;
* :mod:`reason.core.engine.hf.runner`: the forwards (long prefill rows apart from short decode
  rows), logits and sampling;
* :mod:`reason.core.engine.hf.speculative`: with a drafter, drafted decode rows and their
  lossless verification.

One step: admit queued jobs, plan rows and secure their KV slots, run the forwards and hand each
row's hidden states back (head rows to the scheduler, decode rows to sampling, drafted rows to
verification), start the jobs whose head hidden state is ready by sampling their children's first
tokens, and write the finished jobs' children into their trees, in index order, as the step's
outcomes. The children's KV stays cached in the node store for later expansions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reason.core.draft import Drafter, make_drafter
from reason.core.engine.base import Engine, ExpandRequest, Outcome
from reason.core.engine.hf.kv import NodeStore
from reason.core.engine.hf.loader import load_model_and_tokenizer
from reason.core.engine.hf.runner import ModelRunner, new_pool
from reason.core.engine.hf.scheduler import Job, Plan, Scheduler, Seq
from reason.core.engine.hf.speculative import Speculator, check_draft_options
from reason.core.engine.stops import StopChecker, TokenTexts
from reason.core.engine.text import decode, eos_token_ids, tokenize_prompt
from reason.core.errors import ReasonError
from reason.core.seeding import derive_seed, fresh_seed
from reason.core.tree import Node, Tree


class HFEngine(Engine):
    """Tree expansion with a transformers causal LM.

    Parameters:
        model, tokenizer: a loaded causal LM (sdpa or eager attention) and its tokenizer.
        cache_tokens / cache_bytes: KV budget (one of them; ``None`` for unbounded). Over budget,
            the least recently used unpinned subtrees are evicted and recomputed when needed again.
        max_running: most sequences decoded at once; further requests wait their turn.
        pack_siblings: decode a job's children as one tree-masked row (the prefix is gathered once
            per job instead of once per child).
        prefill_tokens_per_forward: bound on padded tokens of one prefill forward.
        draft: speculative tree drafting: True for the engine's default drafter
            (``default_drafter``: ``"suffix"``, matches in the problem's tree and in what the run
            generated before), a drafter name (``"spine"``, ``"suffix"``, ``"recycle"``), a
            :class:`~reason.core.draft.Drafter`, or None / False (the default) for none. Lossless:
            the same tokens as without it, greedy or seeded. With the measured threshold (the
            default) each step drafts only where drafting has measured faster for steps of its
            batch size (see :class:`~reason.core.engine.hf.draft_cost.DraftGate`), so drafting costs
            little where it does not pay; which steps draft then follows wall-clock timings, so the
            ledger's forward and draft counts vary from run to run (the tokens never do). Off by
            default for that reason: run records stay reproducible to the ledger.
        draft_tokens: most draft tokens verified per sequence per step; each sequence adapts its own
            size below this to its measured acceptance.
        draft_threshold: accepted tokens a fed draft token must bring on average (0..1); a sequence's
            draft is cut to its measured acceptance over this. None (default) measures it: the
            fitted cost of one more fed token times the tokens a decode step yields per second (see
            :mod:`reason.core.engine.hf.draft_cost`), so drafting backs off where the forward is
            compute-bound. 0 sizes drafts by acceptance alone.

    The engine without prefix caching, the baseline benchmarks compare against, is
    :class:`reason.core.engine.hf.nocache.NoPrefixCacheEngine`.
    """

    name = "hf"
    scheduler_class: type[Scheduler] = Scheduler  # the scheduling policy (subclasses swap it)
    default_drafter: str | None = "suffix"  # what ``draft=True`` means

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        cache_tokens: int | None = None,
        cache_bytes: int | None = None,
        max_running: int = 256,
        pack_siblings: bool = False,
        prefill_tokens_per_forward: int = 8192,
        draft: str | Drafter | None | bool = None,
        draft_tokens: int = 16,
        draft_threshold: float | None = None,
    ) -> None:
        super().__init__()
        impl = getattr(model.config, "_attn_implementation", "sdpa")
        if impl not in ("sdpa", "eager"):
            raise ReasonError("attn_implementation", f"{impl!r} cannot take tree masks", "load with sdpa or eager")
        if cache_tokens is not None and cache_bytes is not None:
            raise ReasonError("cache_bytes", "given together with cache_tokens", "give one budget")
        if max_running < 1:
            raise ReasonError("max_running", f"must be at least 1 (got {max_running})", "raise it")
        self.model = model
        self.tokenizer = tokenizer
        self.pool = new_pool(model, cache_tokens, cache_bytes)
        self.store = NodeStore(self.pool)
        self.runner = ModelRunner(model, self.pool, self.ledger, prefill_tokens_per_forward)
        self.max_context = self._context_limit(self.runner.config)
        self.eos_ids = eos_token_ids(getattr(model, "generation_config", None), tokenizer)
        check_draft_options(draft_tokens, draft_threshold)
        vocab = self.runner.vocab_size
        if draft is True:
            draft = self.default_drafter
        self.drafter: Drafter | None = make_drafter(draft, vocab) if isinstance(draft, str) else (draft or None)
        self.speculator = (
            None if self.drafter is None
            else Speculator(self.drafter, self.runner, self.pool, self.ledger, draft_tokens, draft_threshold)
        )
        self.scheduler = self.scheduler_class(
            self.pool,
            self.store,
            self.ledger,
            max_running=max_running,
            pack_siblings=pack_siblings,
            draft_planner=None if self.speculator is None else self.speculator.plan,
        )
        self._token_text = TokenTexts(self.decode)  # shared by every sequence's stop checks
        self._tickets = 0
        self._hooked: set[int] = set()
        self.weights_version = 0  # bumped by update_weights

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str | torch.dtype | None = "auto",
        device: str | None = None,
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
        **options: Any,
    ) -> HFEngine:
        """Load ``model`` (local directory or hub id) and build an engine over it."""
        lm, tok = load_model_and_tokenizer(
            model, dtype=dtype, device=device, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
        )
        return cls(lm, tok, **options)

    @staticmethod
    def _context_limit(cfg: Any) -> int | None:
        limit = getattr(cfg, "max_position_embeddings", None)
        window = getattr(cfg, "sliding_window", None)
        # The engine attends to the full context; past a sliding window that would differ from the
        # model, so the window bounds the context.
        if window and getattr(cfg, "use_sliding_window", True):
            limit = min(limit, window) if limit else window
        return limit

    @property
    def preemptions(self) -> int:
        """Jobs whose KV was dropped to make room (recomputed later)."""
        return self.scheduler.preemptions

    # -- text -----------------------------------------------------------------------------------

    def tokenize_prompt(self, prompt: str | Sequence[dict[str, str]] | Sequence[int]) -> tuple[list[int], str]:
        return tokenize_prompt(self.tokenizer, prompt, self.runner.vocab_size)

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (float32) from final hidden states ``[n, hidden]``."""
        return self.runner.logits(hidden)

    # -- requests -------------------------------------------------------------------------------

    def submit(self, request: ExpandRequest) -> int:
        request.validate()
        tree = request.tree
        if tree.uid not in self._hooked:
            tree.add_release_hook(self.store.release)
            self._hooked.add(tree.uid)
        path = tree.path(request.node)
        path_len = sum(len(n.token_ids) for n in path)
        room = None if self.max_context is None else self.max_context - path_len
        if room is not None and room < 1:
            raise ReasonError(
                "node", f"its path already fills the model's context ({self.max_context} tokens)", "expand a shorter path"
            )
        self._tickets += 1
        job = Job(self._tickets, request, path, order=0, ids=tree.reserve_ids(request.n))
        sampling = request.sampling
        base_seed = sampling.seed if sampling.seed is not None else fresh_seed()
        for i in range(request.n):
            checker = StopChecker(request.stop, self.eos_ids, self.decode, room, self._token_text)
            job.seqs.append(Seq(job, i, derive_seed(base_seed, i), checker))
        self.scheduler.add(job)
        return job.ticket

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def cancel(self, ticket: int) -> bool:
        """Drop the request's sequences and free their KV (see :meth:`Engine.cancel`); the path's
        cached KV stays for later expansions."""
        job = self.scheduler.cancel(ticket)
        if job is None:
            return False
        if self.speculator is not None:
            self.speculator.forget(job)
        return True

    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | None = None, *, strict: bool = True) -> int:
        """Take new policy weights between rollout batches, without rebuilding the engine.

        With ``state_dict``, load it into the model in place (``strict``: every key must match).
        Without, the caller changed the shared model object itself (a trainer's optimizer step).
        Either way every cached KV slot and hidden state, computed under the old weights, is
        dropped, so no later expansion reads stale KV; trees stay valid and their paths are
        recomputed when next expanded. Returns how many cached tokens were dropped."""
        if self.scheduler.waiting or self.scheduler.running:
            raise ReasonError("weights", "requests are in flight", "update weights between rollout batches")
        if state_dict is not None:
            try:
                with torch.no_grad():
                    self.model.load_state_dict(state_dict, strict=strict)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ReasonError("state_dict", f"does not fit the model ({first})",
                                  "pass the policy's own state dict, or strict=False for a partial one") from None
        self.weights_version += 1
        return self.store.forget_all()

    def release(self, tree: Tree) -> None:
        """Free all cached KV of ``tree`` that no running request needs (call when a problem is done)."""
        self.store.drop_tree_nodes(list(tree))

    # -- the step -------------------------------------------------------------------------------

    def step(self) -> list[Outcome]:
        """Advance every admitted request by one forward round (see the module docstring); the
        outcomes of the requests that finished."""
        started = time.perf_counter()
        self.scheduler.admit()
        drafting = False
        if self.speculator is not None:
            decoding = sum(len(j.live()) for j in self.scheduler.running if j.started)
            drafting = self.speculator.begin_step(decoding)
        plans = self.scheduler.schedule(drafting)
        planned = time.perf_counter() - started
        prefill, decode_rows = self.runner.split(plans)
        for group in prefill + ([decode_rows] if decode_rows else []):
            began, made = time.perf_counter(), self.ledger.generated_tokens
            self._absorb(group, self.runner.run(group))
            if group is decode_rows and self.speculator is not None:
                fed = sum(p.row.q for p in group)
                spent = planned + time.perf_counter() - began
                self.speculator.record(fed, self.ledger.generated_tokens - made, spent)
        self._start_ready_jobs()
        self._finish_jobs()
        self.ledger.wall_seconds += time.perf_counter() - started
        return self.scheduler.take_done()

    def _absorb(self, plans: list[Plan], hidden: torch.Tensor) -> None:
        """Hand each row's hidden states on: head rows to the scheduler, plain decode rows to
        sampling, drafted rows to verification."""
        at = 0
        decode_hidden: list[torch.Tensor] = []
        decode_seqs: list[Seq] = []
        drafted: list[tuple[Plan, torch.Tensor]] = []
        for p in plans:
            n_want = len(p.row.want)
            h = hidden[at : at + n_want]
            at += n_want
            if p.seqs is None:
                self.scheduler.absorb_head(p, h)
            elif p.parts:  # packed siblings' drafted rows: each verified on its own share
                q_at = 0
                for part in p.parts:
                    q = part.row.q
                    part.row.write_slots = p.row.write_slots[q_at : q_at + q]
                    drafted.append((part, h[q_at : q_at + q]))
                    q_at += q
            elif p.draft is not None:
                drafted.append((p, h))
            else:
                self.scheduler.absorb_decode(p)
                decode_hidden.append(h)
                decode_seqs.extend(p.seqs)
        if decode_seqs:
            self.runner.sample(self.runner.logits(torch.cat(decode_hidden)), decode_seqs)
        if drafted:
            assert self.speculator is not None
            self.speculator.verify(drafted)

    def _start_ready_jobs(self) -> None:
        """Sample the first token of every child of each job whose head hidden state is ready."""
        ready: list[tuple[Job, torch.Tensor]] = []
        for j in self.scheduler.running:
            if j.started or j.entries is None:
                continue
            hidden = self.scheduler.head_hidden(j)
            if hidden is not None:
                ready.append((j, hidden))
        if not ready:
            return
        logits = self.runner.logits(torch.stack([h for _, h in ready]))
        rows: list[torch.Tensor] = []
        seqs: list[Seq] = []
        for (j, _), row in zip(ready, logits):
            j.started = True
            live = j.live()
            rows.extend([row] * len(live))
            seqs.extend(live)
        if seqs:
            self.runner.sample(torch.stack(rows), seqs)

    def _finish_jobs(self) -> None:
        """Write the children of every finished job into its tree (their KV stays cached) and
        report them."""
        for job in self.scheduler.finished():
            tree = job.tree
            parent = job.request.node
            children: list[Node] = []
            error: BaseException | None = None
            if parent not in tree:
                error = ReasonError("node", "was pruned while it was being expanded", "do not prune pending nodes")
                self.scheduler.free_job_kv(job)
            else:
                for s, node_id in zip(job.seqs, job.ids):
                    if s.finish == "cancelled":
                        continue
                    text = self.decode([t for t in s.tokens if not (s.finish == "eos" and t in self.eos_ids)])
                    child = tree.add_child(parent, s.tokens, text, s.logprobs, s.finish, node_id,
                                           sampling_logprobs=s.sampling_logprobs)
                    entry = self.store.get(child)
                    entry.sampled = True
                    self.store.set_slots(entry, s.slots)
                    entry.fed = s.fed
                    self.store.touch(entry)
                    s.slots = []
                    children.append(child)
            assert job.entries is not None
            self.scheduler.unpin(job)
            if self.speculator is not None:
                self.speculator.forget(job)
            self.scheduler.done.append(Outcome(job.ticket, children, error))
