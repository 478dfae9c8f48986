"""Choosing tokens from logits, one row per sequence, each with its own settings and uniform.

Sampling is by inverse CDF with one uniform per token, drawn from the sequence's counter-based
stream (:func:`reason.seeding.uniform`): a row's token depends on its logits and its uniform only,
never on the other rows, so batch composition cannot change what a seeded sequence gets.
Temperature 0 is argmax. The reported logprob is the model's own (temperature 1, unfiltered).
"""

from __future__ import annotations

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


def choose_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ks: list[int],
    top_ps: list[float],
    uniforms: list[float],
) -> tuple[list[int], list[float]]:
    """Tokens and their logprobs for each row of ``logits`` ``[n, vocab]``."""
    logits = logits.float()
    n, vocab = logits.shape
    logprob_all = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    tokens = [0] * n

    greedy = [i for i in range(n) if temperatures[i] == 0.0]
    if greedy:
        idx = torch.tensor(greedy)
        for i, t in zip(greedy, logits.index_select(0, idx).argmax(-1).tolist()):
            tokens[i] = t

    plain = [i for i in range(n) if temperatures[i] > 0.0 and top_ks[i] == 0 and top_ps[i] >= 1.0]
    if plain:
        idx = torch.tensor(plain)
        temps = torch.tensor([temperatures[i] for i in plain], dtype=torch.float32)[:, None]
        probs = torch.softmax(logits.index_select(0, idx) / temps, dim=-1)
        cdf = torch.cumsum(probs, dim=-1)
        u = torch.tensor([uniforms[i] for i in plain], dtype=torch.float32)[:, None] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u, right=True).clamp_(max=vocab - 1).squeeze(1)
        for i, t in zip(plain, picked.tolist()):
            tokens[i] = t

    for i in range(n):
        if temperatures[i] > 0.0 and (top_ks[i] > 0 or top_ps[i] < 1.0):
            scaled = logits[i] / temperatures[i]
            if top_ks[i] > 0 and top_ps[i] >= 1.0:
                vals, order = torch.topk(scaled, min(top_ks[i], vocab))
            else:
                vals, order = torch.sort(scaled, descending=True)
            probs = _filter_sorted(torch.softmax(vals, dim=-1), top_ks[i], top_ps[i])
            cdf = torch.cumsum(probs, 0)
            pos = int(torch.searchsorted(cdf, torch.tensor([uniforms[i] * float(cdf[-1])]), right=True))
            tokens[i] = int(order[min(pos, len(order) - 1)])

    chosen = torch.tensor(tokens, dtype=torch.long)
    logprobs = logprob_all.gather(1, chosen[:, None]).squeeze(1).tolist()
    return tokens, logprobs
