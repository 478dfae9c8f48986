"""The OpenRLHF agent executor against OpenRLHF's documented contract: ``execute`` called
``n_samples_per_prompt`` times concurrently per prompt on one engine actor, whose ``generate(token_ids,
sampling_params)`` answers a vLLM ``RequestOutput``; each call returns a trajectory dict. OpenRLHF and
vLLM do not install on CPU, so the engine actor is :class:`reason.rl.local.LocalEngineActor` (the
bundled arith model in process, answering in vLLM's output shape) (README: "RL trainer adapters")."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from reason.core.engine.hf import HFEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.rl.local import LocalEngineActor, SamplingParams
from reason.rl.openrlhf import TreeAgentExecutor
from tasks.arith.problems import generate


@pytest.fixture(scope="module")
def actor():
    """An engine actor configured as OpenRLHF configures its vLLM engines for its importance-sampling
    correction: the logprobs it answers are the sampling distribution's."""
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    return LocalEngineActor(engine, logprobs_mode="processed_logprobs"), engine.tokenizer


def _run_group(executor, actor, tokenizer, problem, n):
    async def group():
        params = SamplingParams(temperature=1.0, max_tokens=48, logprobs=1)
        # as OpenRLHF's engine actor does: n concurrent execute calls for one prompt
        return await asyncio.gather(*[executor.execute(problem.prompt, str(problem.answer), params, 128, tokenizer,
                                                       actor) for _ in range(n)])
    return asyncio.run(group())


@pytest.mark.parametrize("reward", ["reward", "tree"])
def test_concurrent_calls_share_one_tree(actor, reward):
    engine, tokenizer = actor
    problem = generate(3, 1, seed=8)[0]
    executor = TreeAgentExecutor(verifier="arith", reward=reward, segment_tokens=8, first_divergence=2)
    before = engine.requests
    outs = _run_group(executor, engine, tokenizer, problem, 6)
    assert executor.trees_grown == 1 and len(outs) == 6
    assert engine.requests - before < 6 * 6  # segment rounds, each batching its expansions
    prompt_ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
    for out in outs:
        assert set(out) >= {"prompt", "label", "reward", "scores", "observation_tokens", "action_ranges",
                            "rollout_log_probs", "extra_logs"}
        obs, ranges = out["observation_tokens"], out["action_ranges"]
        assert obs[:len(prompt_ids)] == prompt_ids and len(out["rollout_log_probs"]) == len(obs)
        assert ranges[0][0] == len(prompt_ids) and ranges[-1][1] == len(obs)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # segments tile the response
        assert all(lp == 0.0 for lp in out["rollout_log_probs"][:len(prompt_ids)])
        assert all(lp <= 0.0 for lp in out["rollout_log_probs"][len(prompt_ids):])
        assert out["scores"] in (0.0, 1.0)
        expected = out["scores"] if reward == "reward" else out["extra_logs"]["tree_advantage"]
        assert out["reward"] == expected
    # the leaves share prefixes: the tree generated fewer tokens than its leaves hold
    assert executor.generated_tokens < executor.leaf_tokens
    assert len({tuple(o["observation_tokens"]) for o in outs}) > 1
    # the next group (a new training step) grows a new tree
    _run_group(executor, engine, tokenizer, problem, 6)
    assert executor.trees_grown == 2 and not executor._pending


def test_fixed_n_and_errors(actor):
    engine, tokenizer = actor
    problem = generate(3, 1, seed=9)[0]
    executor = TreeAgentExecutor(n=4, verifier="arith", segment_tokens=8)
    with pytest.raises(ReasonError, match="n: more calls"):
        _run_group(executor, engine, tokenizer, problem, 5)
    with pytest.raises(ReasonError, match="reward"):
        TreeAgentExecutor(reward="advantage")
    with pytest.raises(ReasonError, match="^logprobs_mode: .*'processed_logprobs'"):  # the actor says what it answers
        _run_group(TreeAgentExecutor(verifier="arith", logprobs_mode="raw_logprobs"), engine, tokenizer, problem, 2)
    with pytest.raises(ReasonError, match="max_length"):
        async def too_long():
            return await TreeAgentExecutor(verifier="arith").execute(problem.prompt, "1", SamplingParams(), 3,
                                                                    tokenizer, engine)
        asyncio.run(too_long())
