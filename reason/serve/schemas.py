"""Request bodies of the server's endpoints (OpenAI-compatible, plus ``/v1/solve``).

Fields beyond OpenAI's follow vLLM's names (``top_k``, ``stop_token_ids``, ``ignore_eos``,
``include_stop_str_in_output``, ``return_token_ids``), so one client speaks to both. vLLM's sampling
extensions ``min_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty`` and
``min_tokens`` are honoured (passed into :class:`~reason.core.engine.base.Sampling` and
:class:`~reason.core.engine.base.Stop`; the whole request prompt is the penalties' prompt), as are
``skip_special_tokens`` (the returned text), ``truncate_prompt_tokens`` and, for chat,
``add_generation_prompt`` / ``continue_final_message``. As vLLM does, completion and chat requests
accept fields this server does not know and ignore them; so are the vLLM fields the engine cannot
honour (``logit_bias``, ``bad_words``, beam search, ...): they are still type- and range-checked, and
:func:`ignored_fields` names those set to anything but their neutral value, which the server logs
and returns in a response header. ``/v1/solve`` (this server's own) still refuses unknown fields.

Types are strict (``"n": true`` or ``"n": "2"`` is a 400, not 1 or 2; an int is a valid float) and
floats finite. The fixed caps (``n``, stop lists) are here; the configurable ones (prompt sizes,
choices, budgets) are checked by the app against :class:`reason.serve.limits.ServerLimits`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reason.serve.limits import MAX_N, MAX_STOP, MIN_TEMPERATURE

StopString = Annotated[str, Field(min_length=1)]
"""A stop string: an empty one would match everywhere."""


Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=-1)  # 0 or -1: off
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    stop_token_ids: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_STOP)] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    return_token_ids: bool = True  # token ids are always returned; accepted for vLLM clients
    stream: Literal[False] = False
    user: str | None = None
    # vLLM's extensions: honoured
    skip_special_tokens: bool | None = None  # None: the text as the engine decoded it (special tokens kept)
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: int | None = Field(None, ge=1)
    min_p: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0, allow_inf_nan=False)
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    min_tokens: int = Field(0, ge=0)
    # vLLM's sampling fields the engine cannot honour: checked, then ignored (see ignored_fields)
    length_penalty: float = Field(1.0, allow_inf_nan=False)
    use_beam_search: bool = False
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0, allow_inf_nan=False)]] | None = None
    bad_words: list[str] | None = None
    allowed_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    priority: int = 0
    stream_options: dict[str, Any] | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"is over 0 and under {MIN_TEMPERATURE}, too small to sample at; use 0 for greedy")
        return value

    @model_validator(mode="after")
    def _min_tokens_fit(self) -> _Sampled:
        cap = getattr(self, "max_completion_tokens", None) or self.max_tokens
        if cap is not None and self.min_tokens > cap:
            raise ValueError(f"min_tokens ({self.min_tokens}) is over max_tokens ({cap}); lower it")
        return self

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple (``stop`` may be one string or a list)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


NEUTRAL: dict[str, Any] = {
    "length_penalty": 1.0, "use_beam_search": False, "logit_bias": None, "bad_words": None,
    "allowed_token_ids": None, "priority": 0, "stream_options": None, "spaces_between_special_tokens": True,
}
"""The fields accepted but not honoured, at the values that change nothing (``best_of`` is neutral
when unset or equal to ``n``; ``logit_bias`` and the lists also when empty)."""


def ignored_fields(body: _Sampled) -> list[str]:
    """Names of the request's fields this server ignores although they ask for something: unknown
    fields, and known ones it cannot honour set to a non-neutral value (sorted)."""
    out = set(body.model_extra or {})
    for name, neutral in NEUTRAL.items():
        value = getattr(body, name)
        if value != neutral and not (neutral is None and not value):
            out.add(name)
    if body.best_of is not None and body.best_of != body.n:
        out.add("best_of")
    return sorted(out)


class CompletionRequest(_Sampled):
    """``POST /v1/completions``: ``prompt`` is text, token ids, or a list of either."""

    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=1)  # only the sampled token's logprob is kept
    echo: Literal[False] = False


class ChatMessage(BaseModel):
    """One chat message (text content only)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: str
    content: str


class ChatRequest(_Sampled):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @model_validator(mode="after")
    def _one_way_to_end(self) -> ChatRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are both true; "
                             "set add_generation_prompt to false to continue the last message")
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise ValueError("continue_final_message needs the last message to be the assistant's")
        return self


class SolveRequest(BaseModel):
    """``POST /v1/solve``: run a whole search strategy on one question."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1)
    strategy: str = "best_of_n"
    budget: int = Field(16, ge=1)  # capped by the server's limits (MAX_BUDGET)
    budget_tokens: int | None = Field(None, ge=1)
    seed: int = 0
    suite: str = "arith"
    prm: str | None = None
    aggregation: Literal["last", "min", "prod", "mean", "model"] = "last"
    value: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, int | float] = Field(default_factory=dict)  # the run's top_p, top_k, min_p, penalties
    max_tokens: int = Field(1024, ge=1)
    include_tree: bool = False

    @field_validator("options")
    @classmethod
    def _finite_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Non-finite numbers and temperatures too small to sample at are refused here; the strategy's
        own options model checks the rest (names, types, ranges)."""
        for key, value in options.items():
            for x in value if isinstance(value, list) else [value]:
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"option {key!r} is {x}; give a finite number")
                if "temperature" in key and isinstance(x, (int, float)) and 0 < x < MIN_TEMPERATURE:
                    raise ValueError(f"option {key!r} is over 0 and under {MIN_TEMPERATURE}, too small to sample at")
        return options
