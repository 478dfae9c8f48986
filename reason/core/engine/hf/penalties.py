"""Logit processing that depends on a sequence's history: vLLM's repetition, presence and frequency
penalties and ``min_tokens`` (see :class:`~reason.core.engine.base.Sampling` and
:class:`~reason.core.engine.base.Stop`).

For each row that needs it, before temperature and filters (vLLM's order):

* ``repetition_penalty`` ``r``: ``z[t] / r`` where ``z[t] > 0`` and ``z[t] * r`` elsewhere, for every
  token ``t`` seen in the prompt or the generated tokens;
* ``frequency_penalty`` ``f`` and ``presence_penalty`` ``p``: ``z[t] - f * c[t] - p * (c[t] > 0)``
  where ``c[t]`` counts ``t`` in the generated tokens;
* ``min_tokens``: the stop ids get ``-inf`` while the child has fewer tokens than that.

A row's history is split at its request's prompt length: the path's first ``prompt_len`` tokens (the
root's by default) are the prompt, the rest of the path, the child's tokens and, for a draft
position, the drafted tokens before it are the generated tokens. All rows are processed together,
with a few gathers and scatters over their histories' ``(row, token)`` pairs: the work grows with
the history lengths, not with the vocabulary.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch

from reason.core.engine.hf.scheduler import Job, Seq


def needs_history(seq: Seq, ahead: int = 0) -> bool:
    """Whether ``seq``'s row at ``ahead`` tokens past its end is processed here: a penalty is on,
    or the child is still under its ``min_tokens`` there."""
    return seq.job.request.sampling.penalised or len(seq.tokens) + ahead < seq.checker.stop.min_tokens


class Histories:
    """Each running job's path as penalty history (prompt ids, generated ids), made once per job
    and kept while the job lives."""

    def __init__(self) -> None:
        self._paths: weakref.WeakKeyDictionary[Job, tuple[torch.Tensor, list[int]]] = weakref.WeakKeyDictionary()

    def path(self, job: Job, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """The job's prompt ids (a tensor on ``device``) and the generated ids of its path."""
        got = self._paths.get(job)
        if got is None:
            ids = job.path_ids or [t for n in job.path for t in n.token_ids]
            cut = job.request.prompt_len
            cut = len(job.path[0].token_ids) if cut is None else min(cut, len(ids))
            got = (torch.tensor(ids[:cut], dtype=torch.long, device=device), ids[cut:])
            self._paths[job] = got
        return got


HISTORIES = Histories()
"""The path histories of every engine's running jobs (weakly keyed: a finished job's goes with it)."""


def _flat(rows: list[int], ids: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """The ``(row, token)`` index pairs of every history id, and each pair's place in ``rows``."""
    lengths = torch.tensor([len(t) for t in ids], device=device)
    where = torch.repeat_interleave(torch.arange(len(rows), device=device), lengths)
    tokens = torch.cat(list(ids)).long() if len(where) else torch.empty(0, dtype=torch.long, device=device)
    return torch.tensor(rows, device=device)[where], tokens, where


def penalise(
    logits: torch.Tensor,
    rows: list[int],
    prompts: Sequence[torch.Tensor],
    generated: Sequence[torch.Tensor],
    repetition: list[float],
    presence: list[float],
    frequency: list[float],
) -> None:
    """Apply each listed row's penalties to ``logits`` ``[n, vocab]`` in place (see the module
    docstring); ``prompts[k]`` and ``generated[k]`` are row ``rows[k]``'s history ids.

    The work is proportional to the histories, not to the vocabulary: the logits of the history's
    ``(row, token)`` pairs are gathered, changed and written back. A token seen several times is
    written several times with the same value (each new value is computed from the values read
    before the write), and the frequency penalty is accumulated once per occurrence."""
    device = logits.device
    row_g, tok_g, at_g = _flat(rows, generated, device)
    rep = torch.tensor(repetition, device=device)
    if bool((rep != 1.0).any()):
        row_p, tok_p, at_p = _flat(rows, prompts, device)
        row_a, tok_a, at_a = torch.cat([row_p, row_g]), torch.cat([tok_p, tok_g]), torch.cat([at_p, at_g])
        v = logits[row_a, tok_a]
        r = rep[at_a]
        logits.index_put_((row_a, tok_a), torch.where(v > 0, v / r, v * r))
    if any(presence):
        logits.index_put_((row_g, tok_g), logits[row_g, tok_g] - torch.tensor(presence, device=device)[at_g])
    if any(frequency):
        logits.index_put_((row_g, tok_g), -torch.tensor(frequency, device=device)[at_g], accumulate=True)


def mask_stops(logits: torch.Tensor, rows: list[int], stop_ids: Sequence[Sequence[int]]) -> None:
    """Give each listed row's stop ids ``-inf`` (``min_tokens`` not reached yet)."""
    r = [row for row, ids in zip(rows, stop_ids) for _ in ids]
    c = [t for ids in stop_ids for t in ids]
    if r:
        logits[torch.tensor(r, device=logits.device), torch.tensor(c, device=logits.device)] = float("-inf")


def process(
    logits: torch.Tensor,
    seqs: Sequence[Seq],
    ahead: Sequence[int],
    drafted: Sequence[Sequence[int]] | None = None,
    histories: Histories = HISTORIES,
) -> None:
    """Apply the penalties and ``min_tokens`` masks of every row of ``logits`` that has them, in
    place; row ``i`` is ``seqs[i]``'s position ``ahead[i]`` tokens past its end, after the draft
    tokens ``drafted[i]`` (None: no draft tokens before any row)."""
    pen: list[int] = []
    prompts: list[torch.Tensor] = []
    generated: list[torch.Tensor] = []
    masked: list[int] = []
    stop_ids: list[list[int]] = []
    vocab = logits.shape[1]
    for i, (s, a) in enumerate(zip(seqs, ahead)):
        if len(s.tokens) + a < s.checker.stop.min_tokens:
            masked.append(i)
            stop_ids.append(sorted(t for t in s.checker.stop_ids if 0 <= t < vocab))
        if s.job.request.sampling.penalised:
            prompt, path_gen = histories.path(s.job, logits.device)
            extra = list(drafted[i]) if drafted is not None else []
            assert len(extra) == a, "a draft position's history needs its drafted tokens"
            pen.append(i)
            prompts.append(prompt)
            generated.append(torch.tensor(path_gen + s.tokens + extra, dtype=torch.long, device=logits.device))
    if pen:
        sps = [seqs[i].job.request.sampling for i in pen]
        penalise(logits, pen, prompts, generated, [sp.repetition_penalty for sp in sps],
                 [sp.presence_penalty for sp in sps], [sp.frequency_penalty for sp in sps])
    if masked:
        mask_stops(logits, masked, stop_ids)
