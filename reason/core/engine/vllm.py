"""The ``vllm`` backend: an in-process ``vllm.LLM`` grows the tree.

vLLM brings paged attention, automatic prefix caching (every expansion sends its whole path as
token ids, so shared prefixes hit the cache exactly), its own continuous batching, and its own
speculative decoding (``speculative={"method": "suffix" | "ngram", ...}``; vLLM verifies chains).
Each :meth:`VLLMEngine.step` hands every pending expansion to one ``LLM.generate`` call.

vLLM reports one kind of per-token logprob, chosen when the ``LLM`` is built (``logprobs_mode``):
the model's own (``"raw_logprobs"``, the default), kept in the nodes' ``logprobs``, or the sampling
distribution's (``"processed_logprobs"``: penalties, temperature, min-p, top-k and top-p applied),
kept in their ``sampling_logprobs`` (their ``logprobs`` then stay empty). vLLM's sampling
extensions (``min_p``, the penalties, ``min_tokens``) are passed on; vLLM's prompt is the whole path,
so its presence and frequency penalties count only the child's own tokens.

Written against vLLM's public API (``LLM``, ``SamplingParams``, ``TokensPrompt``; ``LLM.reward``
for process reward models) for the versions in the ``vllm`` extra. vLLM needs a GPU and is not
installed where this project's CI runs: the tests skip without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reason.core.engine.base import ExpandRequest
from reason.core.engine.outputs import (
    Sampled,
    check_server_logprobs,
    finish_reason,
    max_new_tokens,
)
from reason.core.engine.queued import QueuedEngine
from reason.core.errors import ReasonError


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ReasonError("engine", "vllm is not installed", "pip install 'reason[vllm]' on a GPU machine, or use --engine hf") from None
    return vllm


class VLLMEngine(QueuedEngine):
    """Tree expansion with ``vllm.LLM`` (see the module docstring).

    Parameters:
        llm: a constructed ``vllm.LLM`` (its tokenizer is used for text).
        max_context: the context length; default: the model config's ``max_model_len``.
    """

    name = "vllm"

    def __init__(self, llm: Any, *, max_context: int | None = None) -> None:
        if max_context is None:
            max_context = llm.llm_engine.model_config.max_model_len
        super().__init__(llm.get_tokenizer(), int(max_context))
        self.llm = llm
        self.logprobs_mode = logprobs_mode_of(llm)

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

    def sampling_params(self, request: ExpandRequest, prompt_len: int) -> Any:
        """The ``vllm.SamplingParams`` of one expansion."""
        vllm = _import_vllm()
        return vllm.SamplingParams(**sampling_kwargs(request, max_new_tokens(request.stop, self.max_context - prompt_len)))

    def generate_all(self, batch: Sequence[tuple[ExpandRequest, list[int]]]) -> list[list[Sampled] | BaseException]:
        """Every queued expansion in one ``LLM.generate`` call."""
        _import_vllm()
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids in batch]
        params = [self.sampling_params(request, len(ids)) for request, ids in batch]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return [sampled_outputs(result, request, self.logprobs_mode) for (request, _), result in zip(batch, results)]


def logprobs_mode_of(llm: Any) -> str:
    """The ``logprobs_mode`` a ``vllm.LLM`` was built with (``"raw_logprobs"`` where the version has
    none); a mode that reports logits instead is a one-line error."""
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    mode = getattr(config, "logprobs_mode", None) or "raw_logprobs"
    mode = str(getattr(mode, "value", mode))
    check_server_logprobs(mode)
    return mode


def sampling_kwargs(request: ExpandRequest, max_tokens: int) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments of one expansion capped at ``max_tokens`` new tokens."""
    stop, sampling = request.stop, request.sampling
    return {
        "n": request.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "seed": sampling.seed,
        "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "max_tokens": max_tokens,
        "min_tokens": min(stop.min_tokens, max_tokens),
        "stop": list(stop.strings) or None,
        "stop_token_ids": list(stop.token_ids) or None,
        "ignore_eos": not stop.eos,
        "include_stop_str_in_output": True,  # nodes keep the token that completes a stop string
        "logprobs": 0,  # the sampled token's logprob only
    }


def sampled_outputs(result: Any, request: ExpandRequest, logprobs_mode: str = "raw_logprobs") -> list[Sampled]:
    """The samples of a vLLM ``RequestOutput``, in output-index order; ``logprobs_mode`` is what its
    logprobs are (the engine's ``logprobs_mode``: vLLM's default is ``"raw_logprobs"``)."""
    check_server_logprobs(logprobs_mode)
    return [_sampled(o, request, logprobs_mode) for o in sorted(result.outputs, key=lambda o: o.index)]


def _sampled(output: Any, request: ExpandRequest, logprobs_mode: str) -> Sampled:
    ids = list(output.token_ids)
    lps = []
    for token, entry in zip(ids, output.logprobs or []):
        lps.append(float(entry[token].logprob))  # logprobs=0 still lists the sampled token
    reason = finish_reason(output.finish_reason, output.stop_reason, request.stop, len(ids))
    return Sampled.reported(ids, lps, reason, logprobs_mode)
