"""The ``hf`` backend: transformers + torch in process, with continuous batching over a shared
KV slot pool.

Scheduling (one :meth:`HFEngine.step`):

1. admit queued expansion jobs while there is room for their sequences, pinning their paths;
2. plan rows: a *head* row for each job whose path is not fully cached (it feeds the missing
   suffix of the path and yields the hidden state after the expanded node's last token), and a
   *decode* row for every running sequence (it feeds the sequence's newest token);
3. find KV slots for every token to be fed: free ones, then LRU eviction of unpinned cached
   subtrees, then preemption of the newest job (its KV is recomputed later);
4. run the forwards (long prefill rows apart from short decode rows) and sample;
   with a drafter, a decode row also feeds a draft token tree after the newest token, and the
   sequence keeps the longest draft path that matches the tokens it samples (see ``_verify``);
5. finished jobs become children in their tree, in index order, and are reported.

A job's ``n`` children draw their first token from the same head hidden state, so a node's last
token is fed once however many children it gets, and siblings attend to their parent's slots.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from reason.core.draft import Draft, Drafter, DraftQuery, make_drafter
from reason.core.engine.base import Engine, ExpandRequest, Outcome, Sampling
from reason.core.engine.hf.batch import Row, build_batch
from reason.core.engine.hf.draft_cost import ForwardCost
from reason.core.engine.hf.kv import KVPool, NodeKV, NodeStore, PoolCache
from reason.core.engine.hf.loader import load_model_and_tokenizer
from reason.core.engine.hf.sampler import choose_tokens
from reason.core.engine.stops import StopChecker
from reason.core.engine.text import decode, eos_token_ids, tokenize_prompt
from reason.core.errors import ReasonError
from reason.core.seeding import derive_seed, fresh_seed, uniform
from reason.core.tree import Node, Tree


@dataclass(eq=False)
class _Seq:
    job: _Job
    index: int
    seed: int
    checker: StopChecker
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # KV of tokens[:len(slots)]
    fed: int = 0  # most tokens ever fed (re-feeding below this counts as prefill)
    finish: str | None = None
    draft_rate: float | None = None  # moving average of draft tokens accepted per verification
    draft_steps: int = 0


@dataclass(eq=False)
class _Job:
    ticket: int
    request: ExpandRequest
    path: list[Node]
    order: int
    ids: list[int]
    seqs: list[_Seq] = field(default_factory=list)
    entries: list[NodeKV] | None = None  # pinned path entries while admitted
    started: bool = False  # first tokens sampled
    private: list[int] | None = None  # without prefix caching: this job's own copy of the path KV
    private_hidden: torch.Tensor | None = None
    path_ids: list[int] = field(default_factory=list)

    @property
    def tree(self) -> Tree:
        return self.request.tree

    def live(self) -> list[_Seq]:
        return [s for s in self.seqs if s.finish is None]


@dataclass
class _Plan:
    row: Row
    job: _Job
    seqs: list[_Seq] | None = None  # None: a head row
    head_nodes: list[tuple[int, NodeKV]] = field(default_factory=list)  # (query index, entry) of node ends
    discard_last: bool = False  # head row re-feeds a cached last token only for its hidden state
    private: bool = False  # head row of a job without prefix caching (see HFEngine.prefix_cache)
    draft: Draft | None = None  # decode row of one sequence that also feeds this draft tree
    draft_context: list[int] = field(default_factory=list)  # that sequence's last tokens


class HFEngine(Engine):
    """Tree expansion with a transformers causal LM.

    Parameters:
        model, tokenizer: a loaded causal LM (sdpa or eager attention) and its tokenizer.
        cache_tokens / cache_bytes: KV budget (one of them; ``None`` for unbounded). Over budget,
            the least recently used unpinned subtrees are evicted and recomputed when needed again.
        max_running: most sequences decoded at once; further requests wait their turn.
        prefix_cache: ``False`` gives every expansion a private copy of its path's KV, prefilled from
            scratch and dropped when it finishes (siblings of one expansion still share it): the
            engine without caching, the baseline benchmarks compare against.
        pack_siblings: decode a job's children as one tree-masked row (the prefix is gathered once
            per job instead of once per child).
        prefill_tokens_per_forward: bound on padded tokens of one prefill forward.
        draft: speculative tree drafting: a drafter name (``"spine"``, ``"suffix"``, ``"recycle"``),
            a :class:`~reason.core.draft.Drafter`, or None / False for none. Lossless: the same tokens
            as without it, greedy or seeded.
        draft_tokens: most draft tokens verified per sequence per step; each sequence adapts its own
            size below this to its measured acceptance.
        draft_threshold: accepted tokens a fed draft token must bring on average (0..1); a sequence's
            draft is cut to its measured acceptance over this. None (default) measures it: the
            fitted cost of one more fed token times the tokens a decode step yields per second (see
            :mod:`reason.core.engine.hf.draft_cost`), so drafting backs off where the forward is
            compute-bound. 0 sizes drafts by acceptance alone.
    """

    name = "hf"
    PREFILL_ROW_TOKENS = 16  # rows longer than this go in prefill forwards

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        cache_tokens: int | None = None,
        cache_bytes: int | None = None,
        max_running: int = 256,
        prefix_cache: bool = True,
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
        self.base = getattr(model, model.base_model_prefix)
        # transformers renamed the forward's cache argument (past_key_values -> cache, the old name
        # deprecated since 5.2x and due to go in 5.40): pass whichever this model's forward takes.
        params = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.head = model.get_output_embeddings()
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.config = cfg
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        n_layers = cfg.num_hidden_layers
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        bytes_per = 2 * n_layers * kv_heads * head_dim * torch.empty((), dtype=self.dtype).element_size()
        if cache_bytes is not None:
            cache_tokens = max(1, cache_bytes // bytes_per)
        if cache_tokens is not None and cache_tokens < 1:
            raise ReasonError("cache_tokens", f"must be at least 1 (got {cache_tokens})", "raise the budget")
        self.pool = KVPool(n_layers, kv_heads, head_dim, self.dtype, self.device, cache_tokens)
        self.store = NodeStore(self.pool)
        self.max_running = max_running
        self.prefix_cache = prefix_cache
        self.pack_siblings = pack_siblings
        self.prefill_budget = prefill_tokens_per_forward
        self.max_context = self._context_limit(cfg)
        self.eos_ids = self._eos_ids()
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        self._logit_scale = getattr(cfg, "logit_scale", None)
        self._tickets = 0
        self._orders = 0
        self._waiting: list[_Job] = []
        self._running: list[_Job] = []
        self._done: list[Outcome] = []
        self._hooked: set[int] = set()
        self.preemptions = 0  # jobs whose KV was dropped to make room (recomputed later)
        if draft_tokens < 0:
            raise ReasonError("draft_tokens", f"must be at least 0 (got {draft_tokens})", "use e.g. 16")
        vocab = self.head.weight.shape[0]
        self.drafter: Drafter | None = make_drafter(draft, vocab) if isinstance(draft, str) else (draft or None)
        self.draft_tokens = draft_tokens
        if draft_threshold is not None and not 0.0 <= draft_threshold <= 1.0:
            raise ReasonError("draft_threshold", f"must be between 0 and 1 (got {draft_threshold})", "use 0..1 or None")
        self.draft_threshold = draft_threshold
        self.draft_cost = ForwardCost()
        self._threshold = 0.0  # this step's draft threshold
        self._draft_rate = 1.0  # engine-wide moving average of accepted draft tokens per verification
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

    def _eos_ids(self) -> set[int]:
        return eos_token_ids(getattr(self.model, "generation_config", None), self.tokenizer)

    # -- text -----------------------------------------------------------------------------------

    def tokenize_prompt(self, prompt: str | Sequence[dict[str, str]] | Sequence[int]) -> tuple[list[int], str]:
        return tokenize_prompt(self.tokenizer, prompt, self.head.weight.shape[0])

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

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
        job = _Job(self._tickets, request, path, order=0, ids=tree.reserve_ids(request.n))
        sampling = request.sampling
        base_seed = sampling.seed if sampling.seed is not None else fresh_seed()
        for i in range(request.n):
            checker = StopChecker(request.stop, self.eos_ids, self.decode, room)
            job.seqs.append(_Seq(job, i, derive_seed(base_seed, i), checker))
        self._waiting.append(job)
        return job.ticket

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._done)

    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | None = None, *, strict: bool = True) -> int:
        """Take new policy weights between rollout batches, without rebuilding the engine.

        With ``state_dict``, load it into the model in place (``strict``: every key must match).
        Without, the caller changed the shared model object itself (a trainer's optimizer step).
        Either way every cached KV slot and hidden state, computed under the old weights, is
        dropped, so no later expansion reads stale KV; trees stay valid and their paths are
        recomputed when next expanded. Returns how many cached tokens were dropped."""
        if self._waiting or self._running:
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
        started = time.perf_counter()
        self._admit()
        if self.drafter is not None:
            self._threshold = self.draft_cost.threshold() if self.draft_threshold is None else self.draft_threshold
        plans = self._plan()
        plans = self._secure_slots(plans)
        planned = time.perf_counter() - started
        if plans:
            long_rows = [p for p in plans if p.row.q > self.PREFILL_ROW_TOKENS]
            short_rows = [p for p in plans if p.row.q <= self.PREFILL_ROW_TOKENS]
            for group in self._chunk(long_rows) + ([short_rows] if short_rows else []):
                began, made = time.perf_counter(), self.ledger.generated_tokens
                hidden = self._forward([p.row for p in group])
                self.ledger.forward_passes += 1
                for tree in {p.job.tree for p in group}:
                    tree.ledger.forward_passes += 1
                self._absorb(group, hidden)
                if group is short_rows:
                    fed = sum(p.row.q for p in group)
                    spent = planned + time.perf_counter() - began
                    self.draft_cost.record(fed, self.ledger.generated_tokens - made, spent)
        self._start_ready_jobs()
        self._finish_jobs()
        elapsed = time.perf_counter() - started
        self.ledger.wall_seconds += elapsed
        out, self._done = self._done, []
        return out

    def _chunk(self, plans: list[_Plan]) -> list[list[_Plan]]:
        groups: list[list[_Plan]] = []
        for p in sorted(plans, key=lambda p: p.row.q):
            if groups:
                g = groups[-1]
                # Sorted by q, so this row is the group's longest.
                if p.row.q * (len(g) + 1) <= self.prefill_budget:
                    g.append(p)
                    continue
            groups.append([p])
        return groups

    def _admit(self) -> None:
        running = sum(len(j.live()) for j in self._running)
        while self._waiting:
            job = self._waiting[0]
            n = len(job.live())
            if self._running and running + n > self.max_running:
                break
            self._waiting.pop(0)
            if job.request.node not in job.tree:
                self._fail(job, ReasonError("node", "was pruned before it was expanded", "do not prune pending nodes"))
                continue
            self._orders += 1
            job.order = self._orders
            job.entries = self.store.pin(job.path)
            self._running.append(job)
            running += n

    def _plan(self) -> list[_Plan]:
        plans: list[_Plan] = []
        restoring: set[NodeKV] = set()
        for job in self._running:
            assert job.entries is not None
            if not self.prefix_cache:
                if job.private is None:
                    plans.append(self._private_head_plan(job))
                elif job.started:
                    plans.extend(self._decode_plans(job))
                continue
            missing = [e for e in job.entries if not e.complete]
            needs_head = not job.started and job.entries[-1].head_hidden is None
            if missing or needs_head:
                # Two jobs sharing a missing ancestor: the later one waits a step for the first
                # to restore it, so no token is computed twice.
                if restoring.isdisjoint(missing):
                    plan = self._head_plan(job)
                    restoring.update(e for _, e in plan.head_nodes)
                    plans.append(plan)
                continue
            if not job.started:
                continue  # started right after this step's forwards
            plans.extend(self._decode_plans(job))
        return plans

    def _path_slots(self, job: _Job) -> list[int]:
        if job.private is not None:
            return job.private
        return [s for e in job.entries for s in e.slots]

    def _private_head_plan(self, job: _Job) -> _Plan:
        tokens = [t for n in job.path for t in n.token_ids]
        row = Row(tokens=tokens, positions=list(range(len(tokens))), write_slots=[], ctx=[], want=[len(tokens) - 1])
        return _Plan(row, job, None, [(len(tokens) - 1, job.entries[-1])], private=True)

    def _head_plan(self, job: _Job) -> _Plan:
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
        return _Plan(row, job, None, head_nodes, discard_last=discard)

    def _decode_plans(self, job: _Job) -> list[_Plan]:
        ctx = self._path_slots(job)
        base = len(ctx)
        live = job.live()
        plans: list[_Plan] = []
        packable = [s for s in live if len(s.tokens) - len(s.slots) == 1]
        if self.drafter is not None:
            for s in packable:
                plans.append(self._draft_plan(job, s, ctx, base))
            live = [s for s in live if s not in packable]
            packable = []
        if self.pack_siblings and len(packable) > 1:
            extra: list[int] = []
            spans: list[tuple[int, int]] = []
            for s in packable:
                spans.append((len(extra), len(extra) + len(s.slots)))
                extra.extend(s.slots)
            allow = torch.zeros(len(packable), len(extra), dtype=torch.bool)
            for i, (a, b) in enumerate(spans):
                allow[i, a:b] = True
            row = Row(
                tokens=[s.tokens[-1] for s in packable],
                positions=[base + len(s.tokens) - 1 for s in packable],
                write_slots=[],
                ctx=ctx,
                parents=[-1] * len(packable),
                extra=extra,
                extra_allow=allow,
                want=list(range(len(packable))),
            )
            plans.append(_Plan(row, job, packable))
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
            plans.append(_Plan(row, job, [s]))
        return plans

    def _draft_size(self, s: _Seq) -> int:
        """This step's draft size for ``s``: about twice what it has been accepting, at least 2, cut
        to what pays for its verification cost (its acceptance over the step's threshold), and
        only an occasional probe once drafts stop paying."""
        if s.draft_rate is None:  # a new sequence starts from what drafts have been earning lately
            s.draft_rate = self._draft_rate
        size = min(self.draft_tokens, max(2, int(2 * s.draft_rate) + 2))
        if self._threshold > 0:
            size = min(size, int(s.draft_rate / self._threshold))
        if s.draft_rate < 0.1 or size < 1:
            return 2 if s.draft_steps % 8 == 0 else 0
        stop = s.checker.stop
        left = [x for x in (stop.max_tokens, stop.segment_tokens, s.checker.room) if x is not None]
        if left:
            size = min(size, max(0, min(left) - len(s.tokens) - 1))
        return size

    def _draft_plan(self, job: _Job, s: _Seq, ctx: list[int], base: int) -> _Plan:
        assert self.drafter is not None
        if not job.path_ids:
            job.path_ids = [t for n in job.path for t in n.token_ids]
        size = self._draft_size(s)
        query = DraftQuery(job.tree, job.request.node, job.path_ids, s.tokens, s,
                           [(o, o.tokens) for o in job.live() if o is not s] if size > 0 else [])
        draft = self.drafter.propose(query, size) if size > 0 else Draft()
        start = base + len(s.slots)
        depths = draft.depths()
        row = Row(
            tokens=[s.tokens[-1]] + draft.tokens,
            positions=[start] + [start + d for d in depths],
            write_slots=[],
            ctx=ctx + s.slots,
            parents=[-1] + [p + 1 for p in draft.parents],
            want=list(range(len(draft) + 1)),
        )
        return _Plan(row, job, [s], draft=draft, draft_context=query.context(self.drafter.context_size))

    def _secure_slots(self, plans: list[_Plan]) -> list[_Plan]:
        """Give every planned token a slot, evicting and then preempting when the budget is short."""
        while plans:
            need = sum(p.row.q for p in plans)
            self.store.evict(need)
            if self.pool.n_free >= need:
                for p in plans:
                    p.row.write_slots = self.pool.alloc(p.row.q)
                return plans
            victims = sorted({p.job for p in plans} | set(self._running), key=lambda j: j.order)
            if len(victims) <= 1:
                job = victims[0] if victims else plans[0].job
                self._fail(
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
            self._preempt(victim)
            plans = [p for p in plans if p.job is not victim]
        return plans

    def _free_job_kv(self, job: _Job) -> None:
        for s in job.seqs:
            self.pool.free(s.slots)
            s.slots = []
        if job.private is not None:
            self.pool.free(job.private)
            job.private = None
            job.private_hidden = None

    def _preempt(self, job: _Job) -> None:
        self.preemptions += 1
        self._free_job_kv(job)
        self._running.remove(job)
        if job.entries is not None:
            self.store.unpin(job.entries)
            job.entries = None
        self._waiting.insert(0, job)

    def _fail(self, job: _Job, error: BaseException) -> None:
        self._free_job_kv(job)
        if job in self._running:
            self._running.remove(job)
        if job.entries is not None:
            self.store.unpin(job.entries)
            job.entries = None
        self._done.append(Outcome(job.ticket, [], error))

    # -- the model ------------------------------------------------------------------------------

    def _forward(self, rows: list[Row]) -> torch.Tensor:
        batch = build_batch(rows, self.dtype, self.device)
        cache = PoolCache(self.pool, batch.write_idx, batch.read_idx)
        with torch.inference_mode():
            out = self.base(
                input_ids=batch.input_ids,
                attention_mask=batch.mask,
                position_ids=batch.position_ids,
                use_cache=True,
                **{self._cache_arg: cache},
            )
            return out.last_hidden_state[batch.gather_rows, batch.gather_cols]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (float32) from final hidden states ``[n, hidden]``."""
        with torch.inference_mode():
            logits = self.head(hidden).float()
            if self._logit_scale is not None:
                logits = logits * self._logit_scale
            if self._softcap is not None:
                logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _choose(self, logits: torch.Tensor, seqs: list[_Seq], ahead: list[int]) -> tuple[list[int], list[float]]:
        """The token each row of ``logits`` gives its sequence at ``ahead`` tokens past its current
        end: drawn with that position's uniform, so a draft position gets exactly the token plain
        decoding would give it. ``logits`` may be overwritten."""
        samplings: list[Sampling] = [s.job.request.sampling for s in seqs]
        with torch.inference_mode():
            return choose_tokens(
                logits,
                [sp.temperature for sp in samplings],
                [sp.top_k for sp in samplings],
                [sp.top_p for sp in samplings],
                [uniform(s.seed, len(s.tokens) + a) for s, a in zip(seqs, ahead)],
            )

    def _append(self, s: _Seq, token: int, logprob: float) -> None:
        s.tokens.append(token)
        s.logprobs.append(logprob)
        s.job.tree.ledger.generated_tokens += 1
        self.ledger.generated_tokens += 1
        s.finish = s.checker.check(s.tokens)

    def _sample(self, logits: torch.Tensor, seqs: list[_Seq]) -> None:
        tokens, logprobs = self._choose(logits, seqs, [0] * len(seqs))
        for s, t, lp in zip(seqs, tokens, logprobs):
            self._append(s, t, lp)

    def _count_prefill(self, tree: Tree, n: int) -> None:
        tree.ledger.prefill_tokens += n
        self.ledger.prefill_tokens += n

    def _absorb(self, plans: list[_Plan], hidden: torch.Tensor) -> None:
        at = 0
        decode_hidden: list[torch.Tensor] = []
        decode_seqs: list[_Seq] = []
        drafted: list[tuple[_Plan, torch.Tensor]] = []
        for p in plans:
            n_want = len(p.row.want)
            h = hidden[at : at + n_want]
            at += n_want
            if p.seqs is None:
                self._absorb_head(p, h)
            elif p.draft is not None:
                drafted.append((p, h))
            else:
                slots = p.row.write_slots
                if len(p.seqs) > 1 or p.row.parents is not None:  # packed siblings: one token each
                    for s, slot in zip(p.seqs, slots):
                        self._note_fed(s, [slot])
                else:
                    self._note_fed(p.seqs[0], slots)
                decode_hidden.append(h)
                decode_seqs.extend(p.seqs)
        if decode_seqs:
            self._sample(self.logits(torch.cat(decode_hidden)), decode_seqs)
        if drafted:
            self._verify(drafted)

    def _verify(self, drafted: list[tuple[_Plan, torch.Tensor]]) -> None:
        """Sample every position of every draft row at once, then keep, per sequence, the draft path
        that matches its samples: each matched draft token is accepted (its KV is kept) and the
        first unmatched sample is the new last token."""
        assert self.drafter is not None
        logits = self.logits(torch.cat([h for _, h in drafted]))
        self.drafter.observe([(p.draft_context, p.draft) for p, _ in drafted], logits)
        seqs = [p.seqs[0] for p, _ in drafted for _ in p.row.tokens]
        ahead = [a for p, _ in drafted for a in [0] + p.draft.depths()]
        tokens, logprobs = self._choose(logits, seqs, ahead)
        at = 0
        for p, _ in drafted:
            s, draft, slots = p.seqs[0], p.draft, p.row.write_slots
            n = len(draft) + 1
            picked, lps = tokens[at : at + n], logprobs[at : at + n]
            at += n
            kids = draft.children()
            keep = [slots[0]]
            node, matched = -1, 0  # -1: the sequence's last token (row index 0)
            while True:
                token = picked[node + 1]
                self._append(s, token, lps[node + 1])
                child = kids.get(node, {}).get(token)
                if child is None:
                    break
                matched += 1
                if s.finish is not None:
                    break
                keep.append(slots[child + 1])
                node = child
            kept = set(keep)
            self.pool.free([x for x in slots if x not in kept])
            self._note_fed(s, keep)
            tree = s.job.tree
            tree.ledger.draft_proposed += len(draft)
            tree.ledger.draft_accepted += matched
            self.ledger.draft_proposed += len(draft)
            self.ledger.draft_accepted += matched
            if len(draft):
                s.draft_rate = 0.5 * (s.draft_rate or 0.0) + 0.5 * matched
                self._draft_rate = 0.9 * self._draft_rate + 0.1 * matched
            s.draft_steps += 1

    def _note_fed(self, s: _Seq, slots: list[int]) -> None:
        first = len(s.slots)
        s.slots = s.slots + slots
        # Tokens fed before (recomputed after a preemption) are prefill; the newest sampled one is not.
        refed = max(0, min(s.fed, len(s.slots)) - first)
        if refed:
            self._count_prefill(s.job.tree, refed)
        s.fed = max(s.fed, len(s.slots))

    def _absorb_head(self, p: _Plan, hidden: torch.Tensor) -> None:
        slots = p.row.write_slots
        if p.private:
            last = p.job.entries[-1]
            fresh = 1 if last.sampled and last.fed < len(last.node.token_ids) else 0
            self._count_prefill(p.job.tree, p.row.q - fresh)
            last.fed = len(last.node.token_ids)
            p.job.private = list(slots)
            p.job.private_hidden = hidden[0].clone()
            return
        at = 0
        tree = p.job.tree
        for (q_index, entry), h in zip(p.head_nodes, hidden):
            node = entry.node
            have = len(entry.slots) - (1 if p.discard_last and entry is p.job.entries[-1] else 0)
            n_new = len(node.token_ids) - have
            new_slots = slots[at : at + n_new]
            at += n_new
            fresh = max(0, len(node.token_ids) - max(entry.fed, have)) if entry.sampled else 0
            self._count_prefill(tree, n_new - fresh)
            if entry is p.job.entries[-1] and p.discard_last:
                self.pool.free(new_slots[-1:])  # the token's KV is already cached in another slot
                new_slots = new_slots[:-1]
            self.store.set_slots(entry, entry.slots + new_slots)
            entry.head_hidden = h.clone()

    def _start_ready_jobs(self) -> None:
        ready: list[tuple[_Job, torch.Tensor]] = []
        for j in self._running:
            if j.started or j.entries is None:
                continue
            if j.private_hidden is not None:
                ready.append((j, j.private_hidden))
            elif self.prefix_cache and j.entries[-1].complete and j.entries[-1].head_hidden is not None:
                ready.append((j, j.entries[-1].head_hidden))
        if not ready:
            return
        hidden = torch.stack([h for _, h in ready])
        logits = self.logits(hidden)
        rows: list[torch.Tensor] = []
        seqs: list[_Seq] = []
        for (j, _), row in zip(ready, logits):
            j.started = True
            live = j.live()
            rows.extend([row] * len(live))
            seqs.extend(live)
        if seqs:
            self._sample(torch.stack(rows), seqs)

    def _finish_jobs(self) -> None:
        for job in list(self._running):
            if not job.started:
                continue
            first = job.request.first
            done = sum(s.finish is not None for s in job.seqs)
            if job.live() and not (first is not None and done >= first):
                continue
            for s in job.live():  # cancelled: the winners are known
                s.finish = "cancelled"
                self.pool.free(s.slots)
                s.slots = []
            self._running.remove(job)
            tree = job.tree
            parent = job.request.node
            children: list[Node] = []
            error: BaseException | None = None
            if not self.prefix_cache:
                self._free_job_kv(job)
            if parent not in tree:
                error = ReasonError("node", "was pruned while it was being expanded", "do not prune pending nodes")
                self._free_job_kv(job)
            else:
                for s, node_id in zip(job.seqs, job.ids):
                    if s.finish == "cancelled":
                        continue
                    text = self.decode([t for t in s.tokens if not (s.finish == "eos" and t in self.eos_ids)])
                    child = tree.add_child(parent, s.tokens, text, s.logprobs, s.finish, node_id)
                    entry = self.store.get(child)
                    entry.sampled = True
                    self.store.set_slots(entry, s.slots)
                    entry.fed = s.fed
                    self.store.touch(entry)
                    s.slots = []
                    children.append(child)
            assert job.entries is not None
            self.store.unpin(job.entries)
            job.entries = None
            if self.drafter is not None:
                for s in job.seqs:
                    self.drafter.forget(s)
            self._done.append(Outcome(job.ticket, children, error))
