"""An in-process stand-in for an RL trainer's vLLM engine actor, for dry runs on CPU.

OpenRLHF's agent executors call ``await llm_engine.generate(prompt_token_ids, sampling_params)`` on a
vLLM engine actor and read a ``RequestOutput``. :class:`LocalEngineActor` answers the same call from
an :class:`~reason.core.engine.hf.HFEngine` (any local checkpoint, e.g. the bundled arith model), in
vLLM's output shape, so an agent file can be run end to end without a GPU, vLLM or the trainer;
:class:`SamplingParams` stands in for ``vllm.SamplingParams``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.outputs import check_server_logprobs


@dataclass(kw_only=True)
class SamplingParams:
    """The ``vllm.SamplingParams`` fields the adapters set, by vLLM's names (keyword-only, so an
    unknown name fails), for dry runs where vLLM is not installed."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None


class LocalEngineActor:
    """``generate(prompt_token_ids, sampling_params)`` like OpenRLHF's vLLM engine actor, answered by
    ``engine``. Calls run one at a time (the engine is not thread-safe); ``requests`` counts them.
    ``logprobs_mode`` is vLLM's engine setting of the same name: the logprobs answered are the
    model's own (``"raw_logprobs"``, vLLM's default) or the sampling distribution's
    (``"processed_logprobs"``, what OpenRLHF configures when its importance-sampling correction is on)."""

    def __init__(self, engine: HFEngine, logprobs_mode: str = "raw_logprobs") -> None:
        check_server_logprobs(logprobs_mode)
        self.logprobs_mode = logprobs_mode
        self.engine = engine
        self.requests = 0
        self._lock = threading.Lock()

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        """A vLLM-``RequestOutput``-shaped answer: ``outputs[k]`` with ``index``, ``token_ids``,
        ``text``, ``logprobs`` (``[{token_id: Logprob}]``), ``finish_reason`` and ``stop_reason``."""
        sp = sampling_params
        stop = Stop.make(max_tokens=sp.max_tokens, strings=tuple(sp.stop or ()), token_ids=tuple(sp.stop_token_ids or ()),
                         eos=not sp.ignore_eos, min_tokens=sp.min_tokens)
        sampling = Sampling.make(temperature=sp.temperature, top_p=sp.top_p, top_k=max(sp.top_k, 0), seed=sp.seed,
                                 min_p=sp.min_p, repetition_penalty=sp.repetition_penalty,
                                 presence_penalty=sp.presence_penalty, frequency_penalty=sp.frequency_penalty)
        self.requests += 1

        def expand() -> list[Any]:
            with self._lock:
                tree = self.engine.new_tree(list(prompt_token_ids))
                return self.engine.expand(tree, tree.root, sp.n, stop, sampling)

        children = await asyncio.to_thread(expand)
        outputs = []
        for k, child in enumerate(children):
            ended = child.finish_reason in ("eos", "stop")
            matched = next((s for s in stop.strings if child.text.endswith(s)), None)
            outputs.append(SimpleNamespace(
                index=k, token_ids=list(child.token_ids), text=child.text,
                logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(child.token_ids, self._logprobs(child))],
                finish_reason="stop" if ended else "length",
                stop_reason=matched if child.finish_reason == "stop" else None))
        return SimpleNamespace(prompt_token_ids=list(prompt_token_ids), outputs=outputs)

    def _logprobs(self, child: Any) -> list[float]:
        return child.sampling_logprobs if self.logprobs_mode == "processed_logprobs" else child.logprobs
