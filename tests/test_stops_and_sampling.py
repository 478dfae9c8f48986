"""Stop conditions, seeded sampling, and one-line errors for bad input."""

from __future__ import annotations

import pytest
import torch

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.sampler import choose_tokens
from reason.core.errors import ReasonError
from reason.core.seeding import derive_seed, uniform

PROMPT = "Solve the problem step by step.\nProblem: What is 12 + 30 * 2?\n"


@pytest.fixture
def engine(llama, tokenizer):
    return HFEngine(llama, tokenizer)


def sample_many(engine, tree, stop, n=16, seed=5):
    return engine.expand(tree, tree.root, n, stop, Sampling(temperature=1.0, seed=seed))


def test_stop_string_spanning_tokens_is_kept_in_node(engine, tokenizer):
    tree = engine.new_tree(PROMPT)
    # Find a two-character stop that the sampler produces across two tokens.
    free = sample_many(engine, tree, Stop(max_tokens=40, eos=False), n=8)
    candidates = []
    for node in free:
        pieces = [engine.decode([t]) for t in node.token_ids]
        for a, b in zip(pieces, pieces[1:]):
            if a and b and a.isprintable() and b.isprintable():
                candidates.append(a[-1] + b[0])
    assert candidates
    stop_text = candidates[0]
    kids = sample_many(engine, tree, Stop(strings=(stop_text,), max_tokens=40, eos=False), n=8)
    hits = [k for k in kids if k.finish_reason == "stop"]
    assert hits, "the stop string seen in free sampling must stop the same seeded streams"
    for k in hits:
        assert k.text.endswith(stop_text) or stop_text in engine.decode(k.token_ids[-2:])
        # It stopped at the first completion of the string, not later.
        assert stop_text not in engine.decode(k.token_ids[:-1])
    for k in kids:
        if k.finish_reason != "stop":
            assert stop_text not in k.text


def test_segment_eos_and_cap(engine, tokenizer):
    tree = engine.new_tree(PROMPT)
    [seg] = engine.expand(tree, tree.root, 1, Stop(segment_tokens=7, eos=False), Sampling(temperature=0))
    assert len(seg.token_ids) == 7 and seg.finish_reason == "segment"
    [cap] = engine.expand(tree, tree.root, 1, Stop(max_tokens=5, eos=False), Sampling(temperature=0))
    assert len(cap.token_ids) == 5 and cap.finish_reason == "length"
    # Use the greedy continuation's 3rd token as a stop token id.
    stop_id = seg.token_ids[2]
    [st] = engine.expand(tree, tree.root, 1, Stop(token_ids=(stop_id,), max_tokens=20), Sampling(temperature=0))
    assert st.token_ids == seg.token_ids[: seg.token_ids.index(stop_id) + 1] and st.finish_reason == "stop"
    eos_engine = HFEngine(engine.model, tokenizer)
    eos_engine.eos_ids = {stop_id}
    tree2 = eos_engine.new_tree(PROMPT)
    [eos] = eos_engine.expand(tree2, tree2.root, 1, Stop(max_tokens=20), Sampling(temperature=0))
    assert eos.finish_reason == "eos" and eos.token_ids[-1] == stop_id


def test_seeds_reproduce_and_differ(engine, llama, tokenizer):
    tree = engine.new_tree(PROMPT)
    a = sample_many(engine, tree, Stop(max_tokens=12, eos=False), n=4, seed=1)
    b = sample_many(engine, tree, Stop(max_tokens=12, eos=False), n=4, seed=1)
    c = sample_many(engine, tree, Stop(max_tokens=12, eos=False), n=4, seed=2)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1
    fresh = HFEngine(llama, tokenizer)
    t2 = fresh.new_tree(PROMPT)
    d = sample_many(fresh, t2, Stop(max_tokens=12, eos=False), n=4, seed=1)
    assert [x.token_ids for x in a] == [x.token_ids for x in d]


def test_top_k_one_is_greedy_and_top_p_filters(engine):
    tree = engine.new_tree(PROMPT)
    [greedy] = engine.expand(tree, tree.root, 1, Stop(max_tokens=10, eos=False), Sampling(temperature=0))
    topk = engine.expand(tree, tree.root, 3, Stop(max_tokens=10, eos=False), Sampling(temperature=1.0, top_k=1, seed=3))
    assert all(k.token_ids == greedy.token_ids for k in topk)
    tiny_p = engine.expand(tree, tree.root, 3, Stop(max_tokens=10, eos=False), Sampling(temperature=1.0, top_p=1e-6, seed=3))
    assert all(k.token_ids == greedy.token_ids for k in tiny_p)
    wide = engine.expand(tree, tree.root, 6, Stop(max_tokens=10, eos=False), Sampling(temperature=1.0, top_p=0.9, top_k=50, seed=3))
    assert len({tuple(k.token_ids) for k in wide}) > 1


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.6, 0, 1.0), (1.4, 5, 1.0), (0.9, 0, 0.7)])
def test_engine_draws_each_child_from_its_documented_uniform(engine, temperature, top_k, top_p):
    """The engine hands the sampler (whose distribution tests/test_sampler_distribution.py checks)
    the model's own next-token logits, the request's temperature, top-k and top-p, and child i's
    uniform for its first token, ``uniform(derive_seed(seed, i), 0)``: each child's first token and
    logprob are the sampler's for those inputs."""
    tree = engine.new_tree(PROMPT)
    n, seed = 24, 9
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    kids = engine.expand(tree, tree.root, n, Stop(max_tokens=1, eos=False), sampling)
    with torch.inference_mode():
        logits = engine.model(torch.tensor([tree.prefix_ids(tree.root)])).logits[0, -1].float()
    want, want_lp = choose_tokens(logits.repeat(n, 1), [temperature] * n, [top_k] * n, [top_p] * n,
                                  [uniform(derive_seed(seed, i), 0) for i in range(n)])
    assert [k.token_ids for k in kids] == [[t] for t in want]
    assert [k.logprobs[0] for k in kids] == pytest.approx(want_lp, abs=1e-4)
    assert len(set(want)) > 3  # the children differ: the draws are not degenerate


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Sampling.make(temperature=-1), "sampling.temperature"),
        (lambda: Sampling.make(top_p=0), "sampling.top_p"),
        (lambda: Sampling.make(top_p=1.5), "sampling.top_p"),
        (lambda: Stop.make(regex="\\d+"), "stop.regex"),
        (lambda: Stop.make(max_tokens=0), "stop.max_tokens"),
    ],
)
def test_bad_settings_are_one_line_errors(make, field):
    with pytest.raises(ReasonError) as info:
        make()
    msg = str(info.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_bad_requests_are_one_line_errors(engine):
    tree = engine.new_tree(PROMPT)
    with pytest.raises(ReasonError, match=r"^n: "):
        engine.submit(ExpandRequest(tree, tree.root, 0))
    with pytest.raises(ReasonError, match=r"^prompt: "):
        engine.new_tree("")
    other = engine.new_tree(PROMPT)
    with pytest.raises(ReasonError, match=r"^node: "):
        engine.submit(ExpandRequest(tree, other.root, 1))
    from reason.core.engine.hf.loader import load_model_and_tokenizer

    with pytest.raises(ReasonError, match=r"^model: no such path"):
        load_model_and_tokenizer("./no/such/checkpoint")
