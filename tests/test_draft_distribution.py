"""Drafting under sampling is exactly the target distribution.

Verification samples every position of a draft tree with the uniform plain decoding would use
there and keeps the draft path its samples follow. With several candidates per position this is
the multi-candidate case of speculative sampling for deterministic proposals (each candidate a
point mass): candidate ``c`` is accepted with the target's probability of ``c`` and the residual is
the target without the rejected candidates, which is what drawing from the target and matching
does in one step. Seeded identity with drafting off is tested elsewhere (tests/test_draft.py);
here the tokens drawn through a branching draft tree are compared, by a chi-square test, with
the model's exact distribution computed from its logits, and the same test is shown to reject a
verifier that favours drafted tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from reason.core.draft import Draft, Drafter, DraftQuery
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model

PROMPT = "((23+20)*5-17)*3"
SAMPLES = 3000


class Candidates(Drafter):
    """A fixed branching draft: ``first`` candidates for the next token, each followed by the
    ``second`` candidates (a two-level tree of several candidates per position)."""

    def __init__(self, first: list[int], second: list[int]) -> None:
        self.first, self.second = first, second

    def propose(self, query: DraftQuery, budget: int) -> Draft:
        draft = Draft()
        for a in self.first:
            if len(draft) >= budget:
                break
            node = draft.add(a, -1)
            for b in self.second:
                if len(draft) < budget:
                    draft.add(b, node)
        return draft


def chi2_rejects(counts: torch.Tensor, probs: torch.Tensor, z: float = 3.719) -> bool:
    """Pearson's chi-square test of ``counts`` against ``probs`` at level 1e-4 (cells expecting
    fewer than 5 pooled; the quantile by the Wilson-Hilferty approximation)."""
    n = float(counts.sum())
    expect = probs.double() * n
    big = expect >= 5
    obs = torch.cat([counts.double()[big], counts.double()[~big].sum().reshape(1)])
    exp = torch.cat([expect[big], expect[~big].sum().reshape(1)])
    keep = exp > 0
    stat = float((((obs - exp) ** 2)[keep] / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    quantile = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    return stat > quantile


def exact_marginals(engine: HFEngine, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's distributions of the first and second sampled token (float64), from logits."""
    ids, _ = engine.tokenize_prompt(PROMPT)
    vocab = engine.runner.vocab_size
    with torch.inference_mode():
        first = engine.model(torch.tensor([ids])).logits[0, -1].double()
        p1 = torch.softmax(first / temperature, -1)
        batch = torch.tensor([ids + [a] for a in range(vocab)])
        p2_given = torch.softmax(engine.model(batch).logits[:, -1].double() / temperature, -1)
    return p1, p1 @ p2_given


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_branching_drafts_sample_the_target_distribution(temperature):
    path = resolve_model("arith")
    plain = HFEngine.from_pretrained(path, dtype="float32", device="cpu")
    p1, p2 = exact_marginals(plain, temperature)
    top2 = torch.argsort(p2, descending=True)[:3].tolist()
    drafter = Candidates(first=top2, second=top2[:2])
    engine = HFEngine(plain.model, plain.tokenizer, draft=drafter, draft_threshold=0.0)
    tree = engine.new_tree(PROMPT)
    [kids] = engine.expand_many([ExpandRequest(tree, tree.root, SAMPLES, Stop(max_tokens=3, eos=False),
                                               Sampling(temperature=temperature, seed=5))])
    vocab = p1.shape[0]
    # Merged siblings carry their multiplicity: count every sample.
    firsts = torch.zeros(vocab)
    seconds = torch.zeros(vocab)
    for k in kids:
        firsts[k.token_ids[0]] += k.count
        seconds[k.token_ids[1]] += k.count
    assert float(seconds.sum()) == SAMPLES
    assert engine.ledger.draft_accepted > SAMPLES / 10  # the tree was used
    assert not chi2_rejects(firsts, p1)
    assert not chi2_rejects(seconds, p2)
    # The test has power: a verifier that keeps the first candidate whenever the sample is any
    # drafted token (a bias towards the draft) is rejected on the same samples.
    biased = seconds.clone()
    moved = biased[top2[1:]].sum()
    biased[top2[1:]] = 0
    biased[top2[0]] += moved
    assert chi2_rejects(biased, p2)
