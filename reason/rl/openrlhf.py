"""OpenRLHF: an agent executor whose ``n`` samples of a prompt are the leaves of one tree.

OpenRLHF (``--train.agent_func_path agent.py``, the file defining ``AgentExecutor``) calls
``execute(prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine)`` once per sample,
``n_samples_per_prompt`` times concurrently on one vLLM engine actor. :class:`TreeAgentExecutor`
turns the calls for one prompt into one search: the first call grows a tree of ``n`` leaves through
``llm_engine.generate`` (the trainer's vLLM engine, which holds the synced policy weights; each
round's expansions are sent together and share vLLM's prefix cache), and every call takes the next
leaf. Each returns OpenRLHF's trajectory dict: ``observation_tokens`` (prompt + leaf), one
``action_ranges`` entry per tree segment, ``rollout_log_probs`` (0 on prompt tokens), ``reward``,
``scores`` and ``extra_logs``.

OpenRLHF takes one scalar reward per trajectory and computes advantages within the
``n_samples_per_prompt`` group itself. ``reward="reward"`` returns the verifier's reward (use any
group-relative estimator such as OpenRLHF's ``group_norm``); ``reward="tree"`` returns the
leaf's aggregated tree advantage, to be trained on as is (``reinforce``); ``scores`` always holds the
verifier's reward. Per-segment advantages would need OpenRLHF's trainer changed.

A prompt's ``n`` calls get ``n`` distinct trajectories of samples: a leaf that stands for ``k``
identical samples (a merged node) is handed to ``k`` of them. ``rollout_log_probs`` are whatever the
engine actor's vLLM reports, named by ``logprobs_mode`` (vLLM's setting): OpenRLHF builds its
engines with ``processed_logprobs`` when its importance-sampling correction is on, so that is the
default here (the sampling distribution's logprobs, which the correction compares its
temperature-scaled policy logprobs against); pass ``"raw_logprobs"`` for engines left at vLLM's
default.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import reason
from reason.core.engine.base import ExpandRequest
from reason.core.engine.outputs import Sampled, record_logprobs
from reason.core.engine.token_server import TokenServerEngine
from reason.core.engine.vllm import sampled_outputs, sampling_kwargs
from reason.core.errors import ReasonError
from search.records import RolloutRecord

try:  # OpenRLHF's loader checks the executor's base class; it is absent where OpenRLHF is not installed
    from openrlhf.utils.agent import AgentExecutorBase
except ImportError:  # pragma: no cover - depends on the environment
    AgentExecutorBase = object  # type: ignore[assignment,misc]

REWARDS = ("reward", "tree")


class _Tree:
    """One prompt's pending search: callers waiting for leaves, and the records once grown."""

    def __init__(self) -> None:
        self.callers = 0
        self.handed = 0
        self.done: asyncio.Future[list[RolloutRecord]] = asyncio.get_running_loop().create_future()


class TreeAgentExecutor(AgentExecutorBase):  # type: ignore[misc,valid-type]
    """OpenRLHF agent executor growing one tree per prompt (see the module docstring).

    Parameters:
        n: leaves per tree (OpenRLHF's ``n_samples_per_prompt``); None counts the concurrent calls
            that arrive for a prompt.
        strategy / options: what :func:`reason.rollout` runs (TreePO segments by default).
        verifier: a verifier name (``"math"``, ``"arith"``) or object, checking leaves against the
            label; or ``reward_fn(prompt, label, completion_text) -> float`` instead.
        reward: ``"reward"`` or ``"tree"`` (what goes in the trajectory's ``reward``).
        seed: the first tree's seed; each later tree takes the next.
        logprobs_mode: what the engine actor's logprobs are (vLLM's ``logprobs_mode``; see the
            module docstring).
    """

    def __init__(self, *, n: int | None = None, strategy: str = "treepo", verifier: Any = "math",
                 reward_fn: Callable[[str, Any, str], float] | None = None, reward: str = "reward", seed: int = 0,
                 logprobs_mode: str = "processed_logprobs", **options: Any) -> None:
        self.logprobs = record_logprobs(logprobs_mode)
        self.logprobs_mode = logprobs_mode
        if reward not in REWARDS:
            raise ReasonError("reward", f"unknown {reward!r}", f"use one of {', '.join(REWARDS)}")
        if n is not None and n < 1:
            raise ReasonError("n", f"must be at least 1 (got {n})", "pass n_samples_per_prompt")
        self.n = n
        self.strategy = strategy
        self.verifier = verifier
        self.reward_fn = reward_fn
        self.reward = reward
        self.seed = seed
        self.options = options
        self.trees_grown = 0
        self.generated_tokens = 0
        self.leaf_tokens = 0
        self._pending: dict[tuple[str, str], _Tree] = {}

    async def execute(self, prompt: str, label: Any, sampling_params: Any, max_length: int, hf_tokenizer: Any,
                      llm_engine: Any, images: Any = None) -> dict[str, Any]:
        """One trajectory for ``prompt``: the next leaf of the prompt's tree."""
        if images:
            raise ReasonError("images", "tree rollouts take text prompts only", "drop the images or use another executor")
        key = (prompt, repr(label))
        tree = self._pending.get(key)
        if tree is None or tree.done.done() and tree.handed >= len(tree.done.result()):
            tree = self._pending[key] = _Tree()
        tree.callers += 1
        mine = tree.callers - 1
        if mine == 0:
            await asyncio.sleep(0)  # let the concurrent calls for this prompt register before counting them
            try:
                tree.done.set_result(await self._grow(prompt, label, sampling_params, max_length, hf_tokenizer,
                                                      llm_engine, self.n or tree.callers))
            except BaseException as exc:
                tree.done.set_exception(exc)
                tree.done.exception()  # raised here; the other callers see it through the future
                self._pending.pop(key, None)
                raise
        records = await tree.done
        if mine >= len(records):
            raise ReasonError("n", f"more calls for one prompt than the {len(records)} leaves grown",
                              "set n to n_samples_per_prompt")
        tree.handed += 1
        if tree.handed == len(records) and self._pending.get(key) is tree:
            del self._pending[key]
        return self._trajectory(prompt, label, records[mine])

    async def _grow(self, prompt: str, label: Any, sampling_params: Any, max_length: int, hf_tokenizer: Any,
                    llm_engine: Any, n: int) -> list[RolloutRecord]:
        prompt_ids = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = max_length - len(prompt_ids)
        if room < 1:
            raise ReasonError("max_length", f"the prompt has {len(prompt_ids)} tokens, no room below {max_length}",
                              "raise --data.max_len or shorten the prompt")
        params_type = type(sampling_params)
        told = getattr(llm_engine, "logprobs_mode", None)  # an in-process stand-in says what it answers
        if isinstance(told, str) and told != self.logprobs_mode:
            raise ReasonError("logprobs_mode", f"is {self.logprobs_mode!r} but the engine reports {told!r}",
                              f"pass logprobs_mode={told!r}")

        async def generate(ids: list[int], request: ExpandRequest, max_tokens: int) -> list[Sampled]:
            result = await llm_engine.generate(ids, params_type(**sampling_kwargs(request, max_tokens)))
            return sampled_outputs(result, request, self.logprobs_mode)

        engine = TokenServerEngine(generate, hf_tokenizer, max_context=max_length, loop=asyncio.get_running_loop())
        cap = min(room, int(getattr(sampling_params, "max_tokens", None) or room))
        if self.reward_fn is not None:
            score = self.reward_fn
            reward_kw: dict[str, Any] = {"reward": lambda _i, text: float(score(prompt, label, text))}
        else:
            reward_kw = {"answers": [str(label)], "verifier": self.verifier}
        options = {"temperature": float(getattr(sampling_params, "temperature", 1.0)), "max_tokens": cap,
                   **self.options}
        records = await asyncio.to_thread(reason.rollout, engine, [prompt_ids], strategy=self.strategy, n=n,
                                          seed=self.seed + self.trees_grown, logprobs=self.logprobs,
                                          **reward_kw, **options)
        self.trees_grown += 1
        self.generated_tokens += engine.ledger.generated_tokens
        self.leaf_tokens += sum(len(r.completion_ids) for r in records)
        return records

    def _trajectory(self, prompt: str, label: Any, record: RolloutRecord) -> dict[str, Any]:
        start = len(record.prompt_ids)
        bounds = [0] + record.segment_ends
        ranges = [(start + lo, start + hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
        return {
            "prompt": prompt,
            "label": label,
            "reward": record.reward if self.reward == "reward" else record.advantage,
            "scores": record.reward,
            "observation_tokens": record.prompt_ids + record.completion_ids,
            "action_ranges": ranges,
            "rollout_log_probs": [0.0] * start + list(record.logprobs),
            "extra_logs": {"tree_advantage": record.advantage, "tree_depth": float(len(record.segment_ends))},
        }
