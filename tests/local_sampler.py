"""Sampling with the bundled arith model in process, for tests that stand in for a trainer's
rollout servers (verl's ``LLMServerClient``, OpenRLHF's vLLM engine actor), which need a GPU."""

from __future__ import annotations

import torch


def sample(model, prompt_ids: list[int], *, max_tokens: int, temperature: float, seed: int | None,
           eos_id: int) -> tuple[list[int], list[float], bool]:
    """One sampled continuation: its token ids, their logprobs, and whether it ended at EOS."""
    gen = torch.Generator().manual_seed(int(seed or 0))
    ids = torch.tensor([prompt_ids])
    out: list[int] = []
    lps: list[float] = []
    past = None
    with torch.no_grad():
        for _ in range(max_tokens):
            res = model(ids if past is None else ids[:, -1:], past_key_values=past, use_cache=True)
            past = res.past_key_values
            logp = torch.log_softmax(res.logits[0, -1] / temperature, dim=-1)
            token = int(torch.multinomial(logp.exp(), 1, generator=gen))
            out.append(token)
            lps.append(float(logp[token]))
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token == eos_id:
                return out, lps, True
    return out, lps, False
