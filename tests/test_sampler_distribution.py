"""The hf engine's sampler draws exactly softmax(logits / T), cut by top-k and top-p, and reports
each token's logprob under the model (T = 1, unfiltered) and under that processed distribution.

The sampler turns one uniform into one token by inverse CDF. Feeding it the grid of uniforms
u_i = (i + 0.5) / M, the share of the grid that lands on a token differs from that token's
probability by at most 1 / M (each token owns an interval of the unit line), so the empirical
distribution is compared with the expected one exactly, not statistically. The expected one is
computed here in float64 from the definitions, independently of the sampler's code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reason.core.engine.hf.sampler import choose_tokens, sample_tokens

M = 4000  # grid points per setting: frequencies are exact to 1 / M = 2.5e-4
TOL = 1.0 / M + 1e-5  # the grid's resolution plus float32 rounding of the sampler's cumulative sums


def expected(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """softmax(logits / T) cut to the top_k most likely tokens, renormalised, then cut to the
    smallest most-likely set whose mass reaches top_p, renormalised (the order transformers and
    vLLM apply them in)."""
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    if top_k:
        order = order[:top_k]
    kept = p[order] / p[order].sum()
    n = 0
    mass = 0.0
    while n < len(order) and (n == 0 or mass < top_p):  # add tokens until the mass reaches top_p
        mass += kept[n]
        n += 1
    q = np.zeros_like(p)
    q[order[:n]] = p[order[:n]]
    return q / q.sum()


def make_logits(vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(vocab, generator=gen) * 2.5


# (vocab, temperature, top_k, top_p): the plain inverse-CDF path at T = 1 and T != 1 (a vocabulary
# that is a multiple of the block size and one that needs padding), top-k alone, top-p alone, and
# both together where top-k binds and where top-p binds, and one where top-p of the renormalised
# top-k set keeps fewer tokens than top-p of the whole distribution would (the order matters).
SETTINGS = [
    (1024, 1.0, 0, 1.0),
    (300, 0.6, 0, 1.0),
    (300, 1.7, 0, 1.0),
    (300, 1.3, 7, 1.0),
    (300, 1.2, 0, 0.5),
    (300, 1.0, 3, 0.97),
    (300, 0.7, 20, 0.6),
    (300, 2.0, 12, 0.7),
]


@pytest.fixture(scope="module")
def draws() -> dict[int, tuple[torch.Tensor, list[int], list[float], list[float]]]:
    """Each setting's logits and the tokens, model logprobs and sampling logprobs its M grid
    uniforms give. Settings of one vocabulary share one call, their rows interleaved (a row must not
    depend on its neighbours)."""
    grid = [(i + 0.5) / M for i in range(M)]
    # The top-k / top-p rows go one by one; on a busy machine intra-op threads make each of those
    # tiny ops cost milliseconds, so run single-threaded (the draws do not depend on it).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[int, tuple[torch.Tensor, list[int], list[float], list[float]]] = {}
    try:
        for vocab in sorted({v for v, *_ in SETTINGS}):
            mine = [s for s, setting in enumerate(SETTINGS) if setting[0] == vocab]
            base = {s: make_logits(vocab, seed=11 + s) for s in mine}
            rows = [(s, u) for u in grid for s in mine]  # setting-by-setting within each uniform
            tokens, logprobs, sampling = sample_tokens(
                torch.stack([base[s] for s, _ in rows]),
                [SETTINGS[s][1] for s, _ in rows],
                [SETTINGS[s][2] for s, _ in rows],
                [SETTINGS[s][3] for s, _ in rows],
                [u for _, u in rows],
            )
            for s in mine:
                picked = [j for j, (owner, _) in enumerate(rows) if owner == s]
                out[s] = (base[s], [tokens[j] for j in picked], [logprobs[j] for j in picked],
                          [sampling[j] for j in picked])
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("index", range(len(SETTINGS)), ids=[f"V{v}-T{t}-k{k}-p{p}" for v, t, k, p in SETTINGS])
def test_grid_frequencies_equal_the_filtered_softmax(draws, index):
    vocab, t, k, p = SETTINGS[index]
    logits, tokens, logprobs, sampling = draws[index]
    want = expected(logits.numpy(), t, k, p)
    got = np.bincount(tokens, minlength=vocab) / M
    assert np.abs(got - want).max() <= TOL
    assert len(set(tokens)) >= 3  # not a degenerate setting
    if k or p < 1.0:
        # The support is exactly the expected one: a token more or less at a top-k / top-p
        # boundary carries far more than the grid's resolution.
        support = want > 0
        assert set(np.flatnonzero(got)) == set(np.flatnonzero(support))
        assert want[support].min() > 20 * TOL
    # The reported logprob is the model's own: temperature 1, no filtering.
    own = torch.log_softmax(logits.double(), -1)
    assert np.allclose(logprobs, own[tokens].numpy(), atol=1e-4)
    # The sampling logprob is the token's under the distribution it was drawn from.
    assert np.allclose(sampling, np.log(want[tokens]), atol=1e-4)
    if t != 1.0 or k or p < 1.0:
        assert not np.allclose(sampling, logprobs, atol=1e-2)  # the two kinds differ here


def test_greedy_and_unit_rows_report_both_logprobs():
    """A greedy pick's sampling logprob is 0 (the argmax has probability 1); at T = 1 unfiltered the
    sampling distribution is the model's own; :func:`choose_tokens` is the first two of
    :func:`sample_tokens`. Mixed in one call with a filtered row, which must not disturb them."""
    logits = make_logits(300, seed=5).repeat(3, 1)
    own = torch.log_softmax(logits[0].double(), -1)
    chosen = sample_tokens(logits.clone(), [0.0, 1.0, 0.8], [0, 0, 4], [1.0, 1.0, 1.0], [0.5, 0.3, 0.7])
    assert chosen.tokens[0] == int(logits[0].argmax())
    assert chosen.sampling_logprobs[0] == 0.0
    assert chosen.logprobs == pytest.approx(own[chosen.tokens].tolist(), abs=1e-5)
    assert chosen.sampling_logprobs[1] == pytest.approx(chosen.logprobs[1], abs=1e-5)
    want = expected(logits[0].numpy(), 0.8, 4, 1.0)
    assert chosen.sampling_logprobs[2] == pytest.approx(float(np.log(want[chosen.tokens[2]])), abs=1e-5)
    assert choose_tokens(logits.clone(), [0.0, 1.0, 0.8], [0, 0, 4], [1.0, 1.0, 1.0], [0.5, 0.3, 0.7]) == \
        (chosen.tokens, chosen.logprobs)


def test_settings_tell_faulty_samplers_apart():
    """Each setting's distribution is farther than the tolerance from what a sampler gets that
    ignores the temperature or is one token off at the binding top-k or top-p boundary, so the
    comparison above fails for each of those faults."""
    for s, (vocab, t, k, p) in enumerate(SETTINGS):
        logits = make_logits(vocab, seed=11 + s).numpy()
        want = expected(logits, t, k, p)
        n = int((want > 0).sum())
        rivals = [expected(logits, 1.0 if t != 1.0 else 0.5, k, p)]
        if k == n:  # top-k binds
            rivals += [expected(logits, t, k - 1, 1.0), expected(logits, t, k + 1, p)]
        if p < 1.0 and n < (k or vocab):  # top-p binds
            full = expected(logits, t, 0, 1.0)
            order = np.argsort(-full, kind="stable")
            for m in (n - 1, n + 1):
                q = np.zeros_like(full)
                q[order[:m]] = full[order[:m]]
                rivals.append(q / q.sum())
        assert len(rivals) >= (3 if k or p < 1.0 else 1)
        for r in rivals:
            assert np.abs(r - want).max() > 10 * TOL, SETTINGS[s]
