"""``TokenServerEngine``: trees grown through an async token-in/token-out generate function."""

from __future__ import annotations

import pytest

import reason
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.text import eos_token_ids
from reason.core.engine.token_server import TokenServerEngine, finish_from_tokens
from reason.core.engine.vllm import sampled_outputs, sampling_kwargs
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.rl.local import LocalEngineActor, SamplingParams


@pytest.fixture(scope="module")
def hf():
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")


def _engine(hf, fail_on=None):
    actor = LocalEngineActor(hf)

    async def generate(ids, request, max_tokens):
        if fail_on is not None and len(ids) > fail_on:
            raise ConnectionError("server went away")  # a fault, provoked on purpose
        return sampled_outputs(await actor.generate(ids, SamplingParams(**sampling_kwargs(request, max_tokens))), request)

    return TokenServerEngine(generate, hf.tokenizer, max_context=256), actor


def test_search_without_a_trainer_loop(hf):
    engine, actor = _engine(hf)
    # problems the arith model is unsure of, so the samples depend on the seeds that reach it
    prompts = ["6*3*(15+25)\n", "28+9*16+8\n"]
    options = {"strategy": "treepo", "n": 4, "answers": ["720", "180"], "verifier": "arith", "segment_tokens": 8,
               "first_divergence": 2, "seed": 1}
    records = reason.rollout(engine, prompts, **options)
    assert len(records) == 8 and all(r.completion_ids and len(r.logprobs) == len(r.completion_ids) for r in records)
    # siblings share their path: the engine generated fewer tokens than the leaves hold
    assert engine.ledger.generated_tokens < sum(len(r.completion_ids) for r in records)
    assert actor.requests > 0
    # through the generate function, the same seed grows the tree the engine grows in process
    same = reason.rollout(hf, prompts, **options)
    assert [(r.prompt_index, r.completion_ids, r.segment_ends, r.finish_reason, r.reward) for r in records] == \
        [(r.prompt_index, r.completion_ids, r.segment_ends, r.finish_reason, r.reward) for r in same]
    assert max(abs(a - b) for r, q in zip(records, same) for a, b in zip(r.logprobs, q.logprobs)) < 1e-4


def test_a_failing_server_call_is_the_request_error(hf):
    """Two expansions in one step, one of whose calls fails: that one gets the error, the other its
    children (those the engine grows in process)."""
    engine, _ = _engine(hf, fail_on=5)  # paths longer than 5 tokens fail
    ok, bad = engine.new_tree("7+8\n"), engine.new_tree("12+3*4-5\n")
    stop, sampling = Stop(max_tokens=8), Sampling(seed=1)
    tickets = [engine.submit(ExpandRequest(t, t.root, 2, stop, sampling)) for t in (ok, bad)]
    outcomes = {o.ticket: o for o in engine.step()}
    assert not engine.has_work() and sorted(outcomes) == tickets
    failed, good = outcomes[tickets[1]], outcomes[tickets[0]]
    assert isinstance(failed.error, ConnectionError) and not failed.children and not bad.root.children
    ref = hf.new_tree("7+8\n")
    assert good.error is None
    assert [c.token_ids for c in good.children] == [c.token_ids for c in hf.expand(ref, ref.root, 2, stop, sampling)]
    with pytest.raises(ConnectionError, match="server went away"):  # expand() raises the request's error
        engine.expand(bad, bad.root, 2, stop)
    assert not engine.has_work()


def test_finish_reasons_from_tokens_alone():
    eos = eos_token_ids(type("T", (), {"eos_token_id": 2})(), type("G", (), {"eos_token_id": [5, 2]})(), None)
    assert eos == {2, 5}
    assert finish_from_tokens([9, 2], "x", Stop(), eos) == "eos"
    assert finish_from_tokens([9, 7], "x", Stop(token_ids=(7,)), eos) == "stop"
    assert finish_from_tokens([9, 9], "a\n\n", Stop(strings=("\n\n",)), eos) == "stop"
    assert finish_from_tokens([9] * 8, "x", Stop(segment_tokens=8), eos) == "segment"
    assert finish_from_tokens([9] * 3, "x", Stop(max_tokens=3), eos) == "length"
    assert finish_from_tokens([9, 2], "x", Stop(eos=False, max_tokens=2), eos) == "length"
    with pytest.raises(ReasonError):
        Stop.make(max_tokens=0)
