"""Choosing tokens from logits, one row per sequence, each with its own settings and uniform.

Sampling is by inverse CDF with one uniform per token, drawn from the sequence's counter-based
stream (:func:`reason.core.seeding.uniform`): a row's token depends on its logits and its uniform only,
never on the other rows, so batch composition cannot change what a seeded sequence gets.
Temperature 0 is argmax.

Each chosen token comes with two log-probabilities:

* the model's own, ``log softmax(z)[t]`` of the raw logits ``z`` (temperature 1, unfiltered);
* the sampling distribution's, ``log q[t]`` where ``q`` is what the token was drawn from:
  ``q = softmax(z / T)`` cut to the kept set ``K`` (of the ``top_k`` most likely tokens, those whose
  mass before them, renormalised over the ``top_k``, is below ``top_p``: top-k, then top-p of what
  it kept, the order transformers and vLLM use) and renormalised,
  ``log q[t] = z[t] / T - logsumexp(z / T) - log sum_{j in K} softmax(z / T)[j]``;
  0 for a greedy pick (``T = 0``: the argmax has probability 1).

Both come from tensors the draw computes anyway (one gather and one sum more per row).

``min_p`` (vLLM's order: after the temperature, before top-k and top-p) drops the tokens whose
probability under ``softmax(z / T)`` is below ``min_p`` times the largest; top-k and top-p then act
on what is left, renormalised, and ``q`` is renormalised over the tokens kept by all three. History
processing (penalties, ``min_tokens``; :mod:`reason.core.engine.hf.penalties`) happens before this:
the sampler is then given the processed logits, from which it draws, and the raw ones (``raw``),
from which the model's own logprobs are read.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _filter_sorted(probs_sorted: torch.Tensor, top_k: int, top_p: float, min_p: float = 0.0) -> torch.Tensor:
    if min_p > 0.0:  # relative to the top probability; top-p then reads the renormalised rest
        probs_sorted = torch.where(probs_sorted >= min_p * probs_sorted[0], probs_sorted, torch.zeros_like(probs_sorted))
        probs_sorted = probs_sorted / probs_sorted.sum()
    keep = torch.ones_like(probs_sorted, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:  # of the top-k set renormalised, as transformers and vLLM apply them
        before = torch.cumsum(probs_sorted, 0) - probs_sorted
        mass = probs_sorted[:top_k].sum() if top_k > 0 else probs_sorted.sum()
        keep &= before < top_p * mass
    keep[0] = True
    return torch.where(keep, probs_sorted, torch.zeros_like(probs_sorted))


def _block_size(vocab: int) -> int:
    for bs in (512, 256, 128, 64):
        if vocab % bs == 0:
            return bs
    return 256


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse-CDF draw from unnormalised non-negative ``weights`` ``[k, vocab]``.

    Two levels (block sums, then a cumulative sum inside the chosen block) instead of one cumulative
    sum over the whole vocabulary: the same distribution, a fraction of the cost on large vocabularies.
    """
    k, vocab = weights.shape
    bs = _block_size(vocab)
    if vocab % bs:
        weights = torch.nn.functional.pad(weights, (0, bs - vocab % bs))
    blocks = weights.view(k, -1, bs)
    cum_blocks = blocks.sum(-1).cumsum(-1)  # [k, nb]
    target = uniforms * cum_blocks[:, -1]
    bi = torch.searchsorted(cum_blocks, target[:, None], right=True).clamp_(max=cum_blocks.shape[1] - 1)
    before = torch.where(bi > 0, cum_blocks.gather(1, (bi - 1).clamp_(min=0)), torch.zeros_like(target[:, None]))
    inner = blocks[torch.arange(k, device=weights.device), bi.squeeze(1)].cumsum(-1)  # [k, bs]
    ti = torch.searchsorted(inner, (target[:, None] - before), right=True).clamp_(max=bs - 1)
    return (bi * bs + ti).squeeze(1).clamp_(max=vocab - 1)


class Chosen(NamedTuple):
    """The tokens :func:`sample_tokens` chose, one per row, with the model's own logprob of each
    (``logprobs``) and its logprob under the processed distribution it was drawn from
    (``sampling_logprobs``; see the module docstring)."""

    tokens: list[int]
    logprobs: list[float]
    sampling_logprobs: list[float]


def _greedy(logits: torch.Tensor) -> Chosen:
    """Every row greedy: the argmax, its model logprob, and sampling logprob 0 (three tensor ops
    for the whole batch; the common case of one greedy sequence decoding)."""
    top, tokens = logits.max(-1)
    logprobs = top - torch.logsumexp(logits, -1)
    return Chosen(tokens.tolist(), logprobs.tolist(), [0.0] * len(tokens))


def choose_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ks: list[int],
    top_ps: list[float],
    uniforms: list[float],
    min_ps: list[float] | None = None,
) -> tuple[list[int], list[float]]:
    """Tokens and their model logprobs for each row of ``logits`` ``[n, vocab]`` (may be
    overwritten): :func:`sample_tokens` without the sampling distribution's logprobs."""
    chosen = sample_tokens(logits, temperatures, top_ks, top_ps, uniforms, min_ps)
    return chosen.tokens, chosen.logprobs


def sample_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ks: list[int],
    top_ps: list[float],
    uniforms: list[float],
    min_ps: list[float] | None = None,
    raw: torch.Tensor | None = None,
) -> Chosen:
    """Tokens for each row of ``logits`` ``[n, vocab]`` (may be overwritten), each drawn with its
    row's temperature, top-k, top-p, min-p (None: all 0) and uniform, with both logprobs of the
    module docstring. With ``raw``, ``logits`` are already processed (penalties, masks) and the
    model's own logprobs are read from ``raw`` (the unprocessed logits) instead."""
    if raw is not None:
        chosen = sample_tokens(logits, temperatures, top_ks, top_ps, uniforms, min_ps)
        raw = raw.float()
        picked = torch.tensor(chosen.tokens, device=raw.device)
        own = raw.gather(1, picked[:, None]).squeeze(1) - torch.logsumexp(raw, -1)
        return Chosen(chosen.tokens, own.tolist(), chosen.sampling_logprobs)
    logits = logits.float()
    n, vocab = logits.shape
    if not any(temperatures):
        return _greedy(logits)
    dev = logits.device  # every tensor made here lives beside the logits (CUDA included)
    tokens = torch.zeros(n, dtype=torch.long, device=dev)
    lse = torch.zeros(n, device=dev)
    sampling = torch.zeros(n, device=dev)  # greedy rows keep 0: the argmax has probability 1

    def rows(select) -> list[int]:
        return [i for i in range(n) if select(i)]

    def sub(idx: list[int]) -> torch.Tensor:
        return logits if len(idx) == n else logits.index_select(0, torch.tensor(idx, device=dev))

    greedy = rows(lambda i: temperatures[i] == 0.0)
    if greedy:
        g = sub(greedy)
        tokens[greedy] = g.argmax(-1)
        lse[greedy] = torch.logsumexp(g, -1)

    plain = rows(lambda i: temperatures[i] > 0.0 and top_ks[i] == 0 and top_ps[i] >= 1.0)
    chosen_logprob = torch.zeros(n, device=dev)
    unit = False
    cut = [i for i in plain if min_ps[i] > 0.0] if min_ps else []
    if plain:
        # Work in place on (a copy of) the plain rows: exp((x - max) / T) is the unnormalised
        # distribution; at T = 1 its sum also gives the logsumexp for the reported logprobs.
        x = sub(plain)
        temps = torch.tensor([temperatures[i] for i in plain], device=dev)
        unit = bool((temps == 1.0).all())
        if x is logits and not unit:
            x = x.clone()  # the logprobs below read the raw logits
        raw_lse = None if unit else torch.logsumexp(x, -1)
        top = x.amax(-1)
        x.sub_(top[:, None])
        if not unit:
            x.div_(temps[:, None])
        x.exp_()
        full = None
        if cut:  # min-p: exp((z - max) / T) is the probability relative to the top one
            full = x.sum(-1) if unit else None
            assert min_ps is not None
            x.masked_fill_(x < torch.tensor([min_ps[i] for i in plain], device=x.device)[:, None], 0.0)
        picked = _inverse_cdf(x, torch.tensor([uniforms[i] for i in plain], dtype=torch.float32, device=dev))
        tokens[plain] = picked
        mass = x.sum(-1)
        if unit:  # the sampling distribution is the model's own (cut by min-p where it is on)
            weight = x.gather(1, picked[:, None]).squeeze(1)
            own = torch.log(weight / mass)
            chosen_logprob[plain] = own if full is None else torch.log(weight / full)
            sampling[plain] = own
        else:  # the raw logits are intact here: (z[t] - max) / T - log sum exp((z - max) / T)
            lse[plain] = raw_lse
            z = logits[torch.tensor(plain, device=dev), picked]
            sampling[plain] = (z - top) / temps - torch.log(mass)

    for i in rows(lambda i: temperatures[i] > 0.0 and (top_ks[i] > 0 or top_ps[i] < 1.0)):
        scaled = logits[i] / temperatures[i]
        if top_ks[i] > 0 and top_ps[i] >= 1.0:
            vals, order = torch.topk(scaled, min(top_ks[i], vocab))
        else:
            vals, order = torch.sort(scaled, descending=True)
        soft = torch.softmax(vals, dim=-1)
        min_p = min_ps[i] if min_ps else 0.0
        probs = _filter_sorted(soft, top_ks[i], top_ps[i], min_p)
        cdf = torch.cumsum(probs, 0)
        kept = int((probs > 0).sum())  # the kept set is a prefix of the sorted order
        pos = int(torch.searchsorted(cdf, torch.tensor([uniforms[i] * float(cdf[-1])], device=dev), right=True))
        pos = min(pos, max(kept, 1) - 1)
        tokens[i] = order[pos]
        lse[i] = torch.logsumexp(logits[i], -1)
        sampling[i] = torch.log_softmax(vals, -1)[pos] - torch.log(cdf[-1])
        if min_p > 0.0:  # probs were renormalised over the min-p survivors first
            sampling[i] -= torch.log(soft[soft >= min_p * soft[0]].sum())

    done = set(plain) if plain and unit else set()
    direct = torch.tensor([i for i in range(n) if i not in done], dtype=torch.long, device=dev)
    if len(direct):
        # Only rows whose logits were left untouched are read here.
        chosen = logits[direct].gather(1, tokens[direct][:, None]).squeeze(1)
        chosen_logprob[direct] = chosen - lse[direct]
    return Chosen(tokens.tolist(), chosen_logprob.tolist(), sampling.tolist())
