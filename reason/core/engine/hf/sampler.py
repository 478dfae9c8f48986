"""Choosing tokens from logits, one row per sequence, each with its own settings and uniform.

Sampling is by inverse CDF with one uniform per token, drawn from the sequence's counter-based
stream (:func:`reason.core.seeding.uniform`): a row's token depends on its logits and its uniform only,
never on the other rows, so batch composition cannot change what a seeded sequence gets.
Temperature 0 is argmax.

Each chosen token comes with two log-probabilities:

* the model's own, ``log softmax(z)[t]`` of the raw logits ``z`` (temperature 1, unfiltered);
* the sampling distribution's, ``log q[t]`` where ``q`` is what the token was drawn from:
  ``q = softmax(z / T)`` cut to the kept set ``K`` (the ``top_k`` most likely tokens whose mass
  before them, under ``softmax(z / T)``, is below ``top_p``) and renormalised,
  ``log q[t] = z[t] / T - logsumexp(z / T) - log sum_{j in K} softmax(z / T)[j]``;
  0 for a greedy pick (``T = 0``: the argmax has probability 1).

Both come from tensors the draw computes anyway (one gather and one sum more per row).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _filter_sorted(probs_sorted: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    keep = torch.ones_like(probs_sorted, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:
        before = torch.cumsum(probs_sorted, 0) - probs_sorted
        keep &= before < top_p
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
    inner = blocks[torch.arange(k), bi.squeeze(1)].cumsum(-1)  # [k, bs]
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
) -> tuple[list[int], list[float]]:
    """Tokens and their model logprobs for each row of ``logits`` ``[n, vocab]`` (may be
    overwritten): :func:`sample_tokens` without the sampling distribution's logprobs."""
    chosen = sample_tokens(logits, temperatures, top_ks, top_ps, uniforms)
    return chosen.tokens, chosen.logprobs


def sample_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ks: list[int],
    top_ps: list[float],
    uniforms: list[float],
) -> Chosen:
    """Tokens for each row of ``logits`` ``[n, vocab]`` (may be overwritten), each drawn with its
    row's temperature, top-k, top-p and uniform, with both logprobs of the module docstring."""
    logits = logits.float()
    n, vocab = logits.shape
    if not any(temperatures):
        return _greedy(logits)
    tokens = torch.zeros(n, dtype=torch.long)
    lse = torch.zeros(n)
    sampling = torch.zeros(n)  # greedy rows keep 0: the argmax has probability 1

    def rows(select) -> list[int]:
        return [i for i in range(n) if select(i)]

    def sub(idx: list[int]) -> torch.Tensor:
        return logits if len(idx) == n else logits.index_select(0, torch.tensor(idx))

    greedy = rows(lambda i: temperatures[i] == 0.0)
    if greedy:
        g = sub(greedy)
        tokens[greedy] = g.argmax(-1)
        lse[greedy] = torch.logsumexp(g, -1)

    plain = rows(lambda i: temperatures[i] > 0.0 and top_ks[i] == 0 and top_ps[i] >= 1.0)
    chosen_logprob = torch.zeros(n)
    unit = False
    if plain:
        # Work in place on (a copy of) the plain rows: exp((x - max) / T) is the unnormalised
        # distribution; at T = 1 its sum also gives the logsumexp for the reported logprobs.
        x = sub(plain)
        temps = torch.tensor([temperatures[i] for i in plain])
        unit = bool((temps == 1.0).all())
        if x is logits and not unit:
            x = x.clone()  # the logprobs below read the raw logits
        raw_lse = None if unit else torch.logsumexp(x, -1)
        top = x.amax(-1)
        x.sub_(top[:, None])
        if not unit:
            x.div_(temps[:, None])
        x.exp_()
        picked = _inverse_cdf(x, torch.tensor([uniforms[i] for i in plain], dtype=torch.float32))
        tokens[plain] = picked
        mass = x.sum(-1)
        if unit:  # the sampling distribution is the model's own
            own = torch.log(x.gather(1, picked[:, None]).squeeze(1) / mass)
            chosen_logprob[plain] = own
            sampling[plain] = own
        else:  # the raw logits are intact here: (z[t] - max) / T - log sum exp((z - max) / T)
            lse[plain] = raw_lse
            z = logits[torch.tensor(plain), picked]
            sampling[plain] = (z - top) / temps - torch.log(mass)

    for i in rows(lambda i: temperatures[i] > 0.0 and (top_ks[i] > 0 or top_ps[i] < 1.0)):
        scaled = logits[i] / temperatures[i]
        if top_ks[i] > 0 and top_ps[i] >= 1.0:
            vals, order = torch.topk(scaled, min(top_ks[i], vocab))
        else:
            vals, order = torch.sort(scaled, descending=True)
        probs = _filter_sorted(torch.softmax(vals, dim=-1), top_ks[i], top_ps[i])
        cdf = torch.cumsum(probs, 0)
        kept = int((probs > 0).sum())  # the kept set is a prefix of the sorted order
        pos = int(torch.searchsorted(cdf, torch.tensor([uniforms[i] * float(cdf[-1])]), right=True))
        pos = min(pos, max(kept, 1) - 1)
        tokens[i] = order[pos]
        lse[i] = torch.logsumexp(logits[i], -1)
        sampling[i] = torch.log_softmax(vals, -1)[pos] - torch.log(cdf[-1])

    done = set(plain) if plain and unit else set()
    direct = torch.tensor([i for i in range(n) if i not in done], dtype=torch.long)
    if len(direct):
        # Only rows whose logits were left untouched are read here.
        chosen = logits[direct].gather(1, tokens[direct][:, None]).squeeze(1)
        chosen_logprob[direct] = chosen - lse[direct]
    return Chosen(tokens.tolist(), chosen_logprob.tolist(), sampling.tolist())
