"""The ``vllm`` backend: an in-process ``vllm.LLM`` grows the tree.

vLLM brings paged attention, automatic prefix caching (every expansion sends its whole path as
token ids, so shared prefixes hit the cache exactly), its own continuous batching, and its own
speculative decoding (``speculative={"method": "suffix" | "ngram", ...}``; vLLM verifies chains).
Each :meth:`VLLMEngine.step` hands every pending expansion to one ``LLM.generate`` call.

Written against vLLM's public API (``LLM``, ``SamplingParams``, ``TokensPrompt``; ``LLM.reward``
for process reward models) for the versions in the ``vllm`` extra. vLLM needs a GPU and is not
installed where this project's CI runs: the tests skip without it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from reason.engine.base import Engine, ExpandRequest, Outcome
from reason.engine.outputs import (
    Sampled,
    add_children,
    finish_reason,
    max_new_tokens,
    request_ids,
)
from reason.engine.text import decode, tokenize_prompt
from reason.errors import ReasonError


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ReasonError("engine", "vllm is not installed", "pip install 'reason[vllm]' on a GPU machine, or use --engine hf") from None
    return vllm


class VLLMEngine(Engine):
    """Tree expansion with ``vllm.LLM`` (see the module docstring).

    Parameters:
        llm: a constructed ``vllm.LLM`` (its tokenizer is used for text).
        max_context: the context length; default: the model config's ``max_model_len``.
    """

    name = "vllm"

    def __init__(self, llm: Any, *, max_context: int | None = None) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        if max_context is None:
            max_context = llm.llm_engine.model_config.max_model_len
        self.max_context = int(max_context)
        self._queue: list[tuple[int, ExpandRequest, list[int], list[int]]] = []
        self._tickets = 0

    @classmethod
    def from_pretrained(cls, model: str, *, dtype: str = "auto", seed: int = 0, speculative: dict[str, Any] | None = None,
                        gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                        tensor_parallel_size: int = 1, **llm_options: Any) -> VLLMEngine:
        """Build ``vllm.LLM(model, ...)`` with prefix caching on; ``speculative`` becomes vLLM's
        ``speculative_config`` (e.g. ``{"method": "suffix", "num_speculative_tokens": 16}``)."""
        vllm = _import_vllm()
        options: dict[str, Any] = {"dtype": dtype, "seed": seed, "enable_prefix_caching": True,
                                   "gpu_memory_utilization": gpu_memory_utilization,
                                   "tensor_parallel_size": tensor_parallel_size, **llm_options}
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        if speculative:
            options["speculative_config"] = dict(speculative)
        return cls(vllm.LLM(model=model, **options))

    # -- text -----------------------------------------------------------------------------------

    def tokenize_prompt(self, prompt: Any) -> tuple[list[int], str]:
        return tokenize_prompt(self.tokenizer, prompt, len(self.tokenizer))

    def decode(self, token_ids: Sequence[int]) -> str:
        return decode(self.tokenizer, token_ids)

    # -- requests -------------------------------------------------------------------------------

    def sampling_params(self, request: ExpandRequest, prompt_len: int) -> Any:
        """The ``vllm.SamplingParams`` of one expansion."""
        vllm = _import_vllm()
        return vllm.SamplingParams(**sampling_kwargs(request, max_new_tokens(request.stop, self.max_context - prompt_len)))

    def submit(self, request: ExpandRequest) -> int:
        ids = request_ids(request, self.max_context)
        self._tickets += 1
        self._queue.append((self._tickets, request, ids, request.tree.reserve_ids(request.n)))
        return self._tickets

    def has_work(self) -> bool:
        return bool(self._queue)

    def step(self) -> list[Outcome]:
        """Generate every queued expansion in one ``LLM.generate`` call."""
        if not self._queue:
            return []
        _import_vllm()
        from vllm.inputs import TokensPrompt

        started = time.perf_counter()
        batch, self._queue = self._queue, []
        prompts = [TokensPrompt(prompt_token_ids=ids) for _, _, ids, _ in batch]
        params = [self.sampling_params(request, len(ids)) for _, request, ids, _ in batch]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        out: list[Outcome] = []
        for (ticket, request, _, node_ids), result in zip(batch, results):
            try:
                out.append(Outcome(ticket, add_children(self, request, node_ids, sampled_outputs(result, request))))
            except ReasonError as exc:
                out.append(Outcome(ticket, [], exc))
        self.ledger.wall_seconds += time.perf_counter() - started
        return out


def sampling_kwargs(request: ExpandRequest, max_tokens: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments of one expansion capped at ``max_tokens`` new tokens."""
    stop, sampling = request.stop, request.sampling
    return {
        "n": request.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "seed": sampling.seed,
        "max_tokens": max_tokens,
        "stop": list(stop.strings) or None,
        "stop_token_ids": list(stop.token_ids) or None,
        "ignore_eos": not stop.eos,
        "include_stop_str_in_output": True,  # nodes keep the token that completes a stop string
        "logprobs": 0,  # the sampled token's logprob only
    }


def sampled_outputs(result: Any, request: ExpandRequest) -> list[Sampled]:
    """The samples of a vLLM ``RequestOutput``, in output-index order."""
    return [_sampled(o, request) for o in sorted(result.outputs, key=lambda o: o.index)]


def _sampled(output: Any, request: ExpandRequest) -> Sampled:
    ids = list(output.token_ids)
    lps = []
    for token, entry in zip(ids, output.logprobs or []):
        lps.append(float(entry[token].logprob))  # logprobs=0 still lists the sampled token
    return Sampled(ids, lps, finish_reason(output.finish_reason, output.stop_reason, request.stop, len(ids)))
