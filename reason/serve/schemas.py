"""Request bodies of the server's endpoints (OpenAI-compatible, plus ``/v1/solve``).

Unknown fields are rejected rather than ignored, so a client relying on a feature this server lacks
hears about it. Fields beyond OpenAI's follow vLLM's names (``top_k``, ``stop_token_ids``,
``ignore_eos``, ``include_stop_str_in_output``, ``return_token_ids``), so one client speaks to both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 256


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)  # 0 or -1: off
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    return_token_ids: bool = True  # token ids are always returned; accepted for vLLM clients
    stream: Literal[False] = False
    user: str | None = None

    def stop_strings(self) -> tuple[str, ...]:
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
    model_config = ConfigDict(extra="forbid")

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

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    strategy: str = "best_of_n"
    budget: int = Field(16, ge=1, le=4096)
    budget_tokens: int | None = Field(None, ge=1)
    seed: int = 0
    suite: str = "arith"
    prm: str | None = None
    aggregation: Literal["last", "min", "prod", "mean", "model"] = "last"
    value: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int = Field(1024, ge=1)
    include_tree: bool = False
