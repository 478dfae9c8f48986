"""Request bodies of the server's endpoints (OpenAI-compatible, plus ``/v1/solve``).

Unknown fields are rejected rather than ignored, so a client relying on a feature this server lacks
hears about it. Fields beyond OpenAI's follow vLLM's names (``top_k``, ``stop_token_ids``,
``ignore_eos``, ``include_stop_str_in_output``, ``return_token_ids``), so one client speaks to both.

Types are strict (``"n": true`` or ``"n": "2"`` is a 400, not 1 or 2; an int is a valid float) and
floats finite. The fixed caps (``n``, stop lists) are here; the configurable ones (prompt sizes,
choices, budgets) are checked by the app against :class:`reason.serve.limits.ServerLimits`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reason.serve.limits import MAX_N, MAX_STOP, MIN_TEMPERATURE

StopString = Annotated[str, Field(min_length=1)]
"""A stop string: an empty one would match everywhere."""


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

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

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"is over 0 and under {MIN_TEMPERATURE}, too small to sample at; use 0 for greedy")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings as a tuple (``stop`` may be one string or a list)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


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
