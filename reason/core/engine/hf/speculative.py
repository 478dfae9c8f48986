"""Speculative tree drafting in the hf engine: drafted decode rows and their lossless verification.

With a drafter, a sequence's decode row feeds its newest token followed by a draft token tree
(:meth:`Speculator.plan`). After the forward every position of every drafted row is sampled at
once, each with the uniform plain decoding would use there, and the sequence keeps the longest
draft path that matches its samples (:meth:`Speculator.verify`): each matched draft token is
accepted (its KV is kept) and the first unmatched sample is the new last token, so the tokens are
exactly those of decoding without a draft, greedy or seeded, and so are both logprobs of each (the
model's own and the sampling distribution's, from the same position's logits and settings). Where
the sampling has penalties, a draft position's history holds the drafted tokens before it, as
plain decoding's would hold the tokens sampled there.

Draft sizes adapt per sequence (:meth:`Speculator.draft_size`): about twice what the sequence has
been accepting, cut to what pays for its verification cost, measured by
:class:`~reason.core.engine.hf.draft_cost.ForwardCost` unless a fixed threshold is given.
"""

from __future__ import annotations

import torch

from reason.core.draft import Draft, Drafter, DraftQuery
from reason.core.engine.hf.batch import Row
from reason.core.engine.hf.draft_cost import DraftGate, ForwardCost
from reason.core.engine.hf.kv import KVPool
from reason.core.engine.hf.runner import ModelRunner
from reason.core.engine.hf.scheduler import Job, Plan, Seq
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger


def check_draft_options(draft_tokens: int, draft_threshold: float | None) -> None:
    """Raise :class:`ReasonError` for an unusable draft size or threshold."""
    if draft_tokens < 0:
        raise ReasonError("draft_tokens", f"must be at least 0 (got {draft_tokens})", "use e.g. 16")
    if draft_threshold is not None and not 0.0 <= draft_threshold <= 1.0:
        raise ReasonError("draft_threshold", f"must be between 0 and 1 (got {draft_threshold})", "use 0..1 or None")


def draft_paths(draft: Draft) -> list[list[int]]:
    """Each draft node's tokens from the draft's root down to it, itself included (its depth long)."""
    out: list[list[int]] = []
    for t, p in zip(draft.tokens, draft.parents):
        out.append((out[p] if p >= 0 else []) + [t])
    return out


class Speculator:
    """Draft planning and verification for one engine.

    Parameters:
        drafter: proposes the draft trees.
        runner: the engine's model runner (logits and token choice).
        pool: the KV pool (slots of rejected draft tokens go back to it).
        ledger: the engine's ledger (draft tokens proposed and accepted are counted).
        draft_tokens: most draft tokens verified per sequence per step.
        draft_threshold: accepted tokens a fed draft token must bring (0..1); None measures it.

    The options are checked by :func:`check_draft_options`.
    """

    def __init__(
        self,
        drafter: Drafter,
        runner: ModelRunner,
        pool: KVPool,
        ledger: Ledger,
        draft_tokens: int = 16,
        draft_threshold: float | None = None,
    ) -> None:
        self.drafter = drafter
        self.runner = runner
        self.pool = pool
        self.ledger = ledger
        self.draft_tokens = draft_tokens
        self.draft_threshold = draft_threshold
        self.cost = ForwardCost()
        # With a fixed threshold drafts are sized by acceptance alone and every step drafts; when
        # measuring, the gate also decides step by step whether drafting pays at all.
        self.gate = DraftGate() if draft_threshold is None else None
        self.threshold = 0.0  # this step's draft threshold
        self.rate = 1.0  # engine-wide moving average of accepted draft tokens per verification
        self.drafting = True  # whether this step drafts
        self._n_seqs = 0

    def begin_step(self, n_seqs: int) -> bool:
        """Fix this step's draft threshold (measured, or the given one) and whether the step, which
        decodes ``n_seqs`` sequences, drafts at all (see :class:`DraftGate`)."""
        self.threshold = self.cost.threshold() if self.draft_threshold is None else self.draft_threshold
        self._n_seqs = n_seqs
        self.drafting = self.gate is None or n_seqs == 0 or self.gate.choose(n_seqs)
        return self.drafting

    def record(self, tokens_fed: int, tokens_yielded: int, seconds: float) -> None:
        """Measure one decode forward (drafting and verification included) for the threshold and
        the gate."""
        self.cost.record(tokens_fed, tokens_yielded, seconds)
        if self.gate is not None and self._n_seqs:
            self.gate.record(self._n_seqs, self.drafting, seconds, tokens_yielded)

    def draft_size(self, s: Seq) -> int:
        """This step's draft size for ``s``: about twice what it has been accepting, at least 2, cut
        to what pays for its verification cost (its acceptance over the step's threshold), and
        only an occasional probe once drafts stop paying."""
        if s.draft_rate is None:  # a new sequence starts from what drafts have been earning lately
            s.draft_rate = self.rate
        size = min(self.draft_tokens, max(2, int(2 * s.draft_rate) + 2))
        if self.threshold > 0:
            size = min(size, int(s.draft_rate / self.threshold))
        if s.draft_rate < 0.1 or size < 1:
            return 2 if s.draft_steps % 8 == 0 else 0
        stop = s.checker.stop
        left = [x for x in (stop.max_tokens, stop.segment_tokens, s.checker.room) if x is not None]
        if left:
            size = min(size, max(0, min(left) - len(s.tokens) - 1))
        return size

    def plan(self, job: Job, s: Seq, ctx: list[int], base: int) -> Plan:
        """The decode row of ``s`` with a draft tree after its newest token (``ctx``: the slots of
        the job's path, ``base`` tokens long)."""
        if not job.path_ids:
            job.path_ids = [t for n in job.path for t in n.token_ids]
        size = self.draft_size(s)
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
        return Plan(row, job, [s], draft=draft, draft_context=query.context(self.drafter.context_size))

    def verify(self, drafted: list[tuple[Plan, torch.Tensor]]) -> None:
        """Sample every position of every draft row at once, then keep, per sequence, the draft path
        that matches its samples: each matched draft token is accepted (its KV is kept) and the
        first unmatched sample is the new last token."""
        logits = self.runner.logits(torch.cat([h for _, h in drafted]))
        self.drafter.observe([(p.draft_context, p.draft) for p, _ in drafted], logits)
        seqs = [p.seqs[0] for p, _ in drafted for _ in p.row.tokens]
        ahead = [a for p, _ in drafted for a in [0] + p.draft.depths()]
        drafted_before = None
        if any(p.seqs[0].job.request.sampling.penalised for p, _ in drafted):  # penalties read the history
            drafted_before = [before for p, _ in drafted for before in [[]] + draft_paths(p.draft)]
        chosen = self.runner.choose(logits, seqs, ahead, drafted_before)
        at = 0
        for p, _ in drafted:
            s, draft, slots = p.seqs[0], p.draft, p.row.write_slots
            n = len(draft) + 1
            picked, lps = chosen.tokens[at : at + n], chosen.logprobs[at : at + n]
            slps = chosen.sampling_logprobs[at : at + n]
            at += n
            kids = draft.children()
            keep = [slots[0]]
            node, matched = -1, 0  # -1: the sequence's last token (row index 0)
            while True:
                token = picked[node + 1]
                s.append(token, lps[node + 1], slps[node + 1], self.ledger)
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
            s.note_fed(keep, self.ledger)
            tree = s.job.tree
            tree.ledger.draft_proposed += len(draft)
            tree.ledger.draft_accepted += matched
            self.ledger.draft_proposed += len(draft)
            self.ledger.draft_accepted += matched
            if len(draft):
                s.draft_rate = 0.5 * (s.draft_rate or 0.0) + 0.5 * matched
                self.rate = 0.9 * self.rate + 0.1 * matched
            s.draft_steps += 1

    def forget(self, job: Job) -> None:
        """Let the drafter drop what it keeps for the job's sequences (the job is done)."""
        for s in job.seqs:
            self.drafter.forget(s)
