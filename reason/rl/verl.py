"""verl: tree rollouts as verl's rollout manager, with tree advantages for its estimator.

verl's PPO trainer repeats every prompt ``rollout.n`` times (rows of a prompt adjacent, sharing a
``uid``), hands the batch to its agent-loop manager, and unions the answer back row by row. Point
``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` at :class:`TreeAgentLoopManager` and
it grows one tree per ``uid`` with ``rollout.n`` leaves through the trainer's own rollout servers
(``LLMServerClient.generate``, which carries the synced policy weights and a prefix cache), one leaf
per row, in verl's batch format (``prompts``, ``responses``, ``response_mask``, ``input_ids``,
``attention_mask``, ``position_ids``, ``rollout_log_probs``, ``rm_scores``).

verl's advantage estimators see only ``token_level_rewards``, ``response_mask`` and ``uid``, and the
trainer refuses a changed ``uid``, so subtree groups cannot reach them through ``uid`` without
patching the trainer. The tree therefore travels in ``rm_scores``:

- ``advantage: reward`` puts the leaf's reward on its last token (verl's GRPO then groups the leaves
  of a tree like independent samples);
- ``advantage: segment`` (default) or ``leaf`` puts each token's tree advantage there (its segment's
  credit, or the leaf's aggregated TreePO advantage); pair it with
  ``algorithm.adv_estimator=reason_tree`` (registered on import), which trains on them as they are.
  The rewards are logged as ``tree_reward``.

A prompt group of ``rollout.n`` rows gets ``rollout.n`` leaf-samples: a leaf that stands for ``k``
identical samples (a merged node) fills ``k`` rows. ``rollout_log_probs`` are what verl's servers
report, by the rollout config's ``logprobs_mode`` (verl's default ``processed_logprobs``: the
sampling distribution's, with temperature, top-k and top-p applied, which verl's rollout
corrections compare its temperature-scaled policy logprobs against; ``raw_logprobs``: the model's
own); the tree keeps them as such and the records say which (``logprobs_mode``).

Every row also carries ``tree_path`` (node ids, ``"0-4-9"``), ``tree_segment_ends`` (offsets in the
response where its segments end, ``"8,16,21"``) and ``tree_uid`` (``uid#path``, TreePO's
subgroup encoding) for trainers patched to regroup by subtree. Options come from the config key
``actor_rollout_ref.rollout.agent.tree`` (``+actor_rollout_ref.rollout.agent.tree.segment_tokens=64``):
``strategy``, ``advantage``, ``reward`` (dotted path of a ``compute_score(data_source, solution_str,
ground_truth, extra_info)``; default verl's ``default_compute_score``), ``seed``, and any strategy option.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager
from verl.trainer.ppo.core_algos import register_adv_est
from verl.utils.ray_utils import auto_await

import reason
from reason.core.engine.base import ExpandRequest
from reason.core.engine.outputs import Sampled, record_logprobs
from reason.core.engine.text import eos_token_ids
from reason.core.engine.token_server import TokenServerEngine, finish_from_tokens
from reason.core.errors import ReasonError
from search.records import RolloutRecord

ADVANTAGES = ("segment", "leaf", "reward")


@register_adv_est("reason_tree")
def tree_estimator(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, config: Any = None,
                   index: Any = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """verl advantage estimator ``reason_tree``: the per-token tree advantages that
    :class:`TreeAgentLoopManager` wrote into the rewards, masked to the response."""
    advantages = token_level_rewards * response_mask
    return advantages, advantages


def to_dataproto(records: Sequence[RolloutRecord], uids: Sequence[str], *, pad_id: int, prompt_length: int,
                 response_length: int, advantage: str = "segment") -> DataProto:
    """verl's rollout batch of ``records`` (one row each; ``uids[i]`` is row ``i``'s prompt group):
    prompts left-padded to ``prompt_length``, responses right-padded to ``response_length``."""
    if advantage not in ADVANTAGES:
        raise ReasonError("advantage", f"unknown {advantage!r}", f"use one of {', '.join(ADVANTAGES)}")
    rows = len(records)
    prompts = torch.full((rows, prompt_length), pad_id, dtype=torch.long)
    responses = torch.full((rows, response_length), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros(rows, prompt_length, dtype=torch.long)
    response_mask = torch.zeros(rows, response_length, dtype=torch.long)
    logprobs = torch.zeros(rows, response_length)
    scores = torch.zeros(rows, response_length)
    for i, r in enumerate(records):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        if p > prompt_length:
            raise ReasonError("prompt_length", f"a prompt has {p} tokens, more than {prompt_length}",
                              "raise data.max_prompt_length or filter long prompts")
        if c > response_length:
            raise ReasonError("response_length", f"a leaf has {c} tokens, more than {response_length}",
                              "cap the strategy's max_tokens at the response length")
        prompts[i, prompt_length - p:] = torch.tensor(r.prompt_ids)
        prompt_mask[i, prompt_length - p:] = 1
        responses[i, :c] = torch.tensor(r.completion_ids, dtype=torch.long)
        response_mask[i, :c] = 1
        logprobs[i, :c] = torch.tensor(r.logprobs)
        if advantage == "reward":
            if c:
                scores[i, c - 1] = r.reward
        else:
            scores[i, :c] = torch.tensor(r.token_advantages("segment" if advantage == "segment" else "leaf"))
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    batch = TensorDict({
        "prompts": prompts, "responses": responses, "response_mask": response_mask,
        "input_ids": torch.cat([prompts, responses], dim=1), "attention_mask": attention_mask,
        "position_ids": position_ids, "rollout_log_probs": logprobs, "rm_scores": scores,
    }, batch_size=rows)
    paths = ["-".join(str(n) for n in r.path) for r in records]
    non_tensor = {
        "__num_turns__": np.full(rows, 2, dtype=np.int32),
        "tree_path": np.array(paths, dtype=object),
        "tree_segment_ends": np.array([",".join(str(e) for e in r.segment_ends) for r in records], dtype=object),
        "tree_uid": np.array([f"{u}#{p}" for u, p in zip(uids, paths)], dtype=object),
        "tree_reward": np.array([r.reward for r in records], dtype=np.float32),
    }
    return DataProto(batch=batch, non_tensor_batch=non_tensor, meta_info={"reward_extra_keys": ["tree_reward"]})


def groups_of(uids: Sequence[str]) -> list[tuple[int, int]]:
    """``(start, size)`` of each run of equal consecutive ``uids`` (verl repeats interleaved)."""
    runs: list[tuple[int, int]] = []
    for i, u in enumerate(uids):
        if runs and uids[runs[-1][0]] == u:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    if not module:
        raise ReasonError("reward", f"{path!r} is not a dotted path", "give package.module.function")
    return getattr(importlib.import_module(module), name)


class TreeAgentLoopManager(AgentLoopManager):
    """verl's agent-loop manager growing one tree per prompt group (see the module docstring).
    Constructed by verl's trainer with its config and rollout-server client."""

    def __init__(self, config: Any, llm_client: Any, teacher_client: Any = None,
                 reward_loop_worker_handles: Any = None, tokenizer: Any = None) -> None:
        super().__init__(config, llm_client, teacher_client, reward_loop_worker_handles)
        options = dict(self.rollout_config.agent.get("tree", None) or {})
        self.strategy = str(options.pop("strategy", "treepo"))
        self.advantage = str(options.pop("advantage", "segment"))
        if self.advantage not in ADVANTAGES:
            raise ReasonError("agent.tree.advantage", f"unknown {self.advantage!r}", f"use one of {', '.join(ADVANTAGES)}")
        reward = options.pop("reward", None)
        if reward is None:
            from verl.utils.reward_score import default_compute_score as reward
        self.compute_score = _load(reward) if isinstance(reward, str) else reward
        self.seed = int(options.pop("seed", 0))
        self.options = options
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_config.get("local_path") or self.model_config.path,
                                                      trust_remote_code=bool(self.model_config.get("trust_remote_code")))
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(tokenizer)
        # verl hands this to its vLLM servers; absent, they run at vLLM's default
        self.logprobs_mode = str(self.rollout_config.get("logprobs_mode", None) or "raw_logprobs")
        self.logprobs = record_logprobs(self.logprobs_mode)
        self.calls = 0

    async def _init_agent_loop_workers(self) -> None:
        self.agent_loop_workers = []  # the trees are grown here, through the servers' client

    async def _generate(self, prompt_ids: list[int], request: ExpandRequest, max_tokens: int) -> list[Sampled]:
        stop, sampling = request.stop, request.sampling
        params = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                  "top_k": sampling.top_k if sampling.top_k > 0 else -1, "max_tokens": max_tokens,
                  "min_p": sampling.min_p, "repetition_penalty": sampling.repetition_penalty,
                  "presence_penalty": sampling.presence_penalty, "frequency_penalty": sampling.frequency_penalty,
                  "min_tokens": min(stop.min_tokens, max_tokens),
                  "logprobs": True, "stop": list(stop.strings) or None,
                  "stop_token_ids": list(stop.token_ids) or None, "ignore_eos": not stop.eos,
                  "include_stop_str_in_output": True}
        # One routing id per tree: verl's client sends every call with the same id to the same server,
        # whose prefix cache then holds the tree's shared paths. vLLM gets its own fresh ids, except
        # under full_determinism, where verl passes the id through and each call needs its own.
        sticky = f"reason-tree-{id(request.tree)}"
        distinct = bool(self.rollout_config.get("full_determinism", False))

        async def one(k: int) -> Sampled:  # verl's servers answer one sample per call
            seed = None if sampling.seed is None else sampling.seed + k
            out = await self.llm_client.generate(f"{sticky}-{request.node.id}-{k}" if distinct else sticky,
                                                 prompt_ids=prompt_ids, sampling_params={**params, "seed": seed})
            ids = list(out.token_ids)
            if out.log_probs is None or len(out.log_probs) != len(ids):
                raise ReasonError("rollout.calculate_log_probs", "the server returned no per-token logprobs",
                                  "set actor_rollout_ref.rollout.calculate_log_probs=True")
            text = self.tokenizer.decode(ids, skip_special_tokens=False) if stop.strings else ""  # only to find stop strings
            return Sampled.reported(ids, [float(x) for x in out.log_probs],
                                    finish_from_tokens(ids, text, stop, self.eos_ids), self.logprobs_mode)

        return list(await asyncio.gather(*[one(k) for k in range(request.n)]))

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        """One tree per run of equal ``uid`` rows; one leaf per row, in verl's batch format."""
        started = time.perf_counter()
        uids = [str(u) for u in prompts.non_tensor_batch["uid"]]
        groups = groups_of(uids)
        sizes = {size for _, size in groups}
        if len(sizes) != 1:
            raise ReasonError("rollout.n", f"prompt groups have different sizes {sorted(sizes)}",
                              "repeat every prompt rollout.n times")
        n = sizes.pop()
        column = prompts.non_tensor_batch
        firsts = [start for start, _ in groups]
        questions = [list(column["raw_prompt"][i]) if not isinstance(column["raw_prompt"][i], str)
                     else column["raw_prompt"][i] for i in firsts]

        def reward(index: int, text: str) -> float:
            row = firsts[index]
            truth = column["reward_model"][row]["ground_truth"] if "reward_model" in column else None
            extra = column["extra_info"][row] if "extra_info" in column else None
            data_source = column["data_source"][row] if "data_source" in column else ""
            score = self.compute_score(data_source, text, truth, extra)
            return float(score["score"] if isinstance(score, dict) else score)

        engine = TokenServerEngine(self._generate, self.tokenizer, max_context=self.rollout_config.prompt_length
                                   + self.rollout_config.response_length, loop=asyncio.get_running_loop())
        options = {"max_tokens": self.rollout_config.response_length, "temperature": self.rollout_config.temperature,
                   **self.options}
        records = await asyncio.to_thread(reason.rollout, engine, questions, strategy=self.strategy, n=n,
                                          reward=reward, seed=self.seed + self.calls, logprobs=self.logprobs,
                                          **options)
        self.calls += 1
        output = to_dataproto(records, uids, pad_id=self.tokenizer.pad_token_id or 0,
                              prompt_length=self.rollout_config.prompt_length,
                              response_length=self.rollout_config.response_length, advantage=self.advantage)
        # verl logs these as timing_s/...: the tree's own generated tokens against the leaves' total
        output.meta_info["timing"] = {"agent_loop/generate_sequences/mean": time.perf_counter() - started,
                                      "tree/generated_tokens": float(engine.ledger.generated_tokens),
                                      "tree/leaf_tokens": float(sum(len(r.completion_ids) for r in records))}
        return output
