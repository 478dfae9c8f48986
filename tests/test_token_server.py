"""``TokenServerEngine``: trees grown through an async token-in/token-out generate function."""

from __future__ import annotations

import pytest

import reason
from reason.core.engine.base import Stop
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
    records = reason.rollout(engine, ["7+8\n", "3*4\n"], strategy="treepo", n=4, answers=["15", "12"], verifier="arith",
                             segment_tokens=8, first_divergence=2, seed=1)
    assert len(records) == 8 and all(r.completion_ids and len(r.logprobs) == len(r.completion_ids) for r in records)
    # siblings share their path: the engine generated fewer tokens than the leaves hold
    assert engine.ledger.generated_tokens < sum(len(r.completion_ids) for r in records)
    assert actor.requests > 0
    # the same seed gives the same tree
    again, _ = _engine(hf)
    same = reason.rollout(again, ["7+8\n", "3*4\n"], strategy="treepo", n=4, answers=["15", "12"], verifier="arith",
                          segment_tokens=8, first_divergence=2, seed=1)
    assert [r.completion_ids for r in same] == [r.completion_ids for r in records]


def test_a_failing_server_call_is_the_request_error(hf):
    engine, _ = _engine(hf, fail_on=0)
    tree = engine.new_tree("7+8\n")
    with pytest.raises(ConnectionError, match="server went away"):
        engine.expand(tree, tree.root, 2, Stop(max_tokens=8))
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
