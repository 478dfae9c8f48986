"""The verl adapter against verl's real classes: DataProto, AgentLoopManager, TokenOutput, the
trainer's batch union and its advantage estimators. verl pins its own transformers, so this runs in
a separate environment (README: "RL trainer adapters"); elsewhere it is skipped."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl")

from local_sampler import sample
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.workers.rollout.replica import TokenOutput

from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.rl.verl import TreeAgentLoopManager, groups_of
from rewards.base import VerifyItem
from search.records import segment_advantages
from tasks.arith.problems import generate
from tasks.arith.scorers import ArithVerifier


class LocalServerClient:
    """verl's ``LLMServerClient.generate`` contract (one sample per call, ``TokenOutput`` back),
    answered by the bundled arith model in process, standing in for verl's vLLM servers."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls.append(dict(sampling_params, request_id=request_id))
        assert sampling_params["stop"] is None  # the sampler below knows no stop strings
        ids, lps, _ = sample(self.model, prompt_ids, max_tokens=sampling_params["max_tokens"],
                             temperature=sampling_params["temperature"], seed=sampling_params["seed"],
                             eos_id=self.tokenizer.eos_token_id)
        return TokenOutput(token_ids=ids, log_probs=lps, stop_reason="completed")


@pytest.fixture(scope="module")
def setup():
    path = resolve_model("arith")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return path, model, tokenizer


def _manager(setup, advantage):
    path, model, tokenizer = setup
    config = OmegaConf.create({
        "actor_rollout_ref": {
            "model": {"path": path},
            # the sampler below reports temperature-scaled logprobs, as verl's default processed_logprobs
            "rollout": {"prompt_length": 64, "response_length": 48, "temperature": 1.0, "n": 4,
                        "logprobs_mode": "processed_logprobs",
                        "agent": {"num_workers": 0, "tree": {"advantage": advantage, "segment_tokens": 8, "first_divergence": 2, "seed": 5}}},
        },
    })
    client = LocalServerClient(model, tokenizer)
    manager = TreeAgentLoopManager.create(config=config, llm_client=client)
    verifier = ArithVerifier()
    manager.compute_score = lambda source, text, truth, extra: verifier.verify_batch([VerifyItem("", text, truth)])[0]
    return manager, client


def _batch(problems):
    batch = DataProto.from_single_dict({
        "dummy": torch.zeros(len(problems), 1),
        "raw_prompt": np.array([p.prompt for p in problems], dtype=object),
        "data_source": np.array(["arith"] * len(problems), dtype=object),
        "reward_model": np.array([{"ground_truth": str(p.answer)} for p in problems], dtype=object),
    })
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in problems], dtype=object)
    return batch


@pytest.mark.parametrize("advantage", ["segment", "reward"])
def test_manager_batch_joins_the_trainer_batch(setup, advantage):
    manager, client = _manager(setup, advantage)
    assert manager.logprobs == "sampling"  # the records say the servers' logprobs are the sampling distribution's
    problems = generate(3, 3, seed=12)
    batch = _batch(problems)
    gen = batch.select(non_tensor_batch_keys=list(batch.non_tensor_batch)).repeat(4, interleave=True)
    out = manager.generate_sequences(gen)  # verl calls it synchronously (auto_await)
    # As verl's trainer does: repeat the batch and union the rollout into it, row by row.
    joined = batch.repeat(4, interleave=True).union(out)
    assert len(joined) == 12 and joined.batch["responses"].shape == (12, 48)
    assert all(c["logprobs"] and c["max_tokens"] <= 48 for c in client.calls)
    assert len({c["request_id"] for c in client.calls}) == 3  # one sticky routing id per tree
    mask = joined.batch["response_mask"]
    assert torch.equal(joined.batch["attention_mask"][:, 64:], mask)
    # the tree shared prefixes: fewer tokens generated than the leaves hold
    assert out.meta_info["timing"]["tree/generated_tokens"] < out.meta_info["timing"]["tree/leaf_tokens"]
    paths = list(joined.non_tensor_batch["tree_path"])
    for start, size in groups_of(list(joined.non_tensor_batch["uid"])):
        assert size == 4 and all(p.startswith("0-") for p in paths[start:start + size])
    rewards = joined.non_tensor_batch["tree_reward"]
    assert set(rewards.tolist()) <= {0.0, 1.0}
    joined.batch["token_level_rewards"] = joined.batch["rm_scores"]
    if advantage == "reward":  # the reward on the last response token; verl's GRPO groups by uid
        assert torch.allclose(joined.batch["rm_scores"].sum(-1), torch.tensor(rewards))
        adv, _ = compute_grpo_outcome_advantage(joined.batch["token_level_rewards"], mask,
                                                joined.non_tensor_batch["uid"])
        assert adv.shape == mask.shape
    else:  # per-token segment credit, passed through by the registered estimator
        config = OmegaConf.create({})
        data = compute_advantage(joined, "reason_tree", config=config)
        assert torch.equal(data.batch["advantages"], joined.batch["rm_scores"] * mask)
        for start, _ in groups_of(list(joined.non_tensor_batch["uid"])):  # rebuilt from the tree columns
            rows = range(start, start + 4)
            paths = [[int(x) for x in joined.non_tensor_batch["tree_path"][i].split("-")] for i in rows]
            credit = segment_advantages(paths, [float(rewards[i]) for i in rows])
            for i, seg in zip(rows, credit):
                ends = [int(e) for e in joined.non_tensor_batch["tree_segment_ends"][i].split(",")]
                expected = [a for a, lo, hi in zip(seg, [0] + ends, ends) for _ in range(hi - lo)]
                n = int(mask[i].sum())
                assert data.batch["advantages"][i, :n].tolist() == pytest.approx(expected, abs=1e-6)
                assert sum(seg) == pytest.approx(rewards[i] - rewards[start:start + 4].mean(), abs=1e-6)


def test_manager_rejects_uneven_groups(setup):
    manager, _ = _manager(setup, "segment")
    problems = generate(3, 2, seed=3)
    gen = _batch(problems).repeat(2, interleave=True)
    keep = [0, 1, 2]  # the second prompt has one row only
    with pytest.raises(ReasonError, match="rollout.n"):
        manager.generate_sequences(gen.select_idxs(np.array(keep)))
