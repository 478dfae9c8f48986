"""The engine contract: expand a node into ``n`` children that each end at a :class:`Stop`,
sampled under :class:`Sampling`.

Backends implement :class:`Engine` (``submit`` / ``step``); the async :mod:`reason.core.context` layer and
the synchronous :meth:`Engine.expand` helper both drive it. All pending requests of all trees advance
together inside ``step``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from reason.core.errors import ReasonError, from_validation_error
from reason.core.ledger import Ledger
from reason.core.tree import Node, Tree


MIN_TEMPERATURE = 1e-5
"""The smallest sampling temperature above 0 (0 is greedy): logits divided by less overflow and
sample garbage. :class:`Sampling` and the strategies' ``temperature`` options refuse values between."""


def check_temperature(value: float) -> float:
    """``value`` when it is 0 (greedy) or at least :data:`MIN_TEMPERATURE`, else a validation error (a
    validator for every sampling temperature: :class:`Sampling`'s and the strategies' options)."""
    if 0.0 < value < MIN_TEMPERATURE:
        raise PydanticCustomError("temperature_range", f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
    return value


class Sampling(BaseModel):
    """How tokens are drawn. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` turn those
    filters off. ``seed`` names the request's random stream: child ``i`` of an expansion draws from
    ``derive_seed(seed, i)``, so the same seed gives the same children whatever else is batched.
    Every number must be finite (NaN and infinity are refused).

    vLLM's sampling extensions, with vLLM's meaning (each off at its default):

    * ``repetition_penalty`` (> 0, 1 = off): the logit of every token seen in the prompt or the
      generated tokens is divided by it where positive and multiplied by it where negative;
    * ``frequency_penalty`` / ``presence_penalty`` (-2..2, 0 = off): subtracted from a token's logit
      times its count in the generated tokens / once if it occurs there at all;
    * ``min_p`` (0..1, 0 = off): tokens whose probability, after the temperature, is below
      ``min_p`` times the most likely token's are dropped (before top-k and top-p).

    The penalties act on the raw logits, before the temperature. In a tree the *prompt* is the
    root's tokens (or the request's :attr:`ExpandRequest.prompt_len` first path tokens) and the
    *generated* tokens are every later token of the expanded node's path followed by the child's
    own: a child continues its ancestors' generation. Remote backends (``openai``, ``vllm``) send
    the whole path as the prompt, so there only the child's own tokens count as generated."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)

    @field_validator("temperature")
    @classmethod
    def _usable_temperature(cls, value: float) -> float:
        return check_temperature(value)

    @classmethod
    def make(cls, **kwargs: Any) -> Sampling:
        """Validate ``kwargs`` into a :class:`Sampling`, raising a one-line :class:`ReasonError`."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            raise from_validation_error(exc, "sampling") from None

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax."""
        return self.temperature == 0.0

    def under(self, defaults: Sampling | None) -> Sampling:
        """This sampling with every filter and penalty it leaves off taken from ``defaults`` (a
        run's settings: top-p, top-k, min-p and the penalties); its temperature and seed are its
        own. Strategies choose temperatures; a run chooses how every draw is filtered."""
        if defaults is None:
            return self
        fields = Sampling.model_fields
        update = {name: getattr(defaults, name) for name in RUN_FIELDS
                  if getattr(self, name) == fields[name].default and getattr(defaults, name) != fields[name].default}
        return self.model_copy(update=update) if update else self

    @property
    def penalised(self) -> bool:
        """True when a repetition, presence or frequency penalty is on (tokens then depend on the
        sequence's history, not only on its logits)."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def run_sampling(sampling: Sampling | Mapping[str, Any] | None) -> Sampling | None:
    """A run's sampling filters and penalties from a :class:`Sampling` or its fields (None: none).
    The temperature and seed are not a run's to set here: strategies take ``temperature`` and
    draw seeds from the problem's; naming them is a one-line error."""
    if sampling is None or isinstance(sampling, Sampling):
        fields = {} if sampling is None else sampling.model_dump(exclude_defaults=True)
    else:
        fields = dict(sampling)
    for name in ("temperature", "seed"):
        if name in fields:
            raise ReasonError(f"sampling.{name}", "is not set through sampling",
                              "pass temperature= (--temperature); seeds come from seed=")
    return Sampling.make(**fields) if fields else None


RUN_FIELDS = tuple(name for name in Sampling.model_fields if name not in ("temperature", "seed"))
"""The :class:`Sampling` fields a run sets for all its draws (:meth:`Sampling.under`): the filters and
penalties; a strategy chooses each draw's temperature and seed."""


class Stop(BaseModel):
    """Where a child ends. Any condition that is met first ends it; the finish reason says which.

    * ``strings``: stop strings (``finish_reason="stop"``). A match may span token boundaries; the
      child ends with the token that completes the string, so the stop text stays in the node.
    * ``token_ids``: extra stop token ids (``"stop"``).
    * ``eos``: stop at the tokenizer's / generation config's end-of-sequence ids (``"eos"``).
    * ``segment_tokens``: end after exactly this many tokens (``"segment"``; TreePO segments).
    * ``max_tokens``: a cap on the child's tokens (``"length"``). Engines also stop at the model's
      context limit (``"length"``).
    * ``min_tokens`` (vLLM's ``min_tokens``): before the child has this many tokens, the EOS ids (when
      ``eos``) and ``token_ids`` cannot be sampled (their logits are masked) and stop strings do not
      end it; ``segment_tokens``, ``max_tokens`` and the context limit still do. It is a ``Stop``
      field, not a :class:`Sampling` one, because it says where a child may end and acts on this
      stop set (vLLM keeps it in ``SamplingParams`` only because that is its one request object).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    strings: tuple[str, ...] = ()
    token_ids: tuple[int, ...] = ()
    eos: bool = True
    segment_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    min_tokens: int = Field(0, ge=0)

    @field_validator("strings")
    @classmethod
    def _non_empty_strings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in value):
            raise ValueError("a stop string is empty")
        return value

    @field_validator("min_tokens")
    @classmethod
    def _min_under_max(cls, value: int, info: ValidationInfo) -> int:
        cap = info.data.get("max_tokens")
        if cap is not None and value > cap:
            raise PydanticCustomError("min_tokens_over_max", f"is over max_tokens ({cap}); lower it")
        return value

    @classmethod
    def make(cls, **kwargs: Any) -> Stop:
        """Validate ``kwargs`` into a :class:`Stop`, raising a one-line :class:`ReasonError`
        (an unknown stop kind names the field)."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err.get("type") == "extra_forbidden":
                kind = ".".join(str(p) for p in err["loc"])
                raise ReasonError(
                    f"stop.{kind}",
                    "unknown stop kind",
                    "use strings, token_ids, eos, segment_tokens, max_tokens or min_tokens",
                ) from None
            raise from_validation_error(exc, "stop") from None


@dataclass
class ExpandRequest:
    """Give ``node`` of ``tree`` ``n`` new children, each ending at ``stop``, sampled under ``sampling``.

    With ``first=k`` the request finishes as soon as ``k`` children are done: the others are
    cancelled (their tokens so far were spent and are counted, but no node is made of them), and
    only the finished children are returned (more than ``k`` when several finish on the same step).
    """

    tree: Tree
    node: Node
    n: int = 1
    stop: Stop = field(default_factory=Stop)
    sampling: Sampling = field(default_factory=Sampling)
    first: int | None = None  # finish once this many children are done; cancel the rest
    prompt_len: int | None = None  # path tokens the penalties count as prompt (None: the root's)

    def validate(self) -> None:
        """Raise :class:`ReasonError` for an unusable request."""
        if not isinstance(self.n, int) or self.n < 1:
            raise ReasonError("n", f"must be at least 1 (got {self.n!r})", "ask for one or more children")
        if self.first is not None and not 1 <= self.first <= self.n:
            raise ReasonError("first", f"must be between 1 and n={self.n} (got {self.first!r})", "lower it or raise n")
        if self.prompt_len is not None and (not isinstance(self.prompt_len, int) or self.prompt_len < 0):
            raise ReasonError("prompt_len", f"must be an int of at least 0 (got {self.prompt_len!r})",
                              "give how many path tokens are the prompt, or None for the root's")
        if self.node not in self.tree:
            raise ReasonError("node", "is not a live node of the request's tree", "expand a node of that tree")
        if not isinstance(self.stop, Stop):
            raise ReasonError("stop", f"must be a Stop (got {type(self.stop).__name__})", "build it with Stop.make(...)")
        if not isinstance(self.sampling, Sampling):
            raise ReasonError(
                "sampling", f"must be a Sampling (got {type(self.sampling).__name__})", "build it with Sampling.make(...)"
            )


@dataclass
class Outcome:
    """What ``step`` hands back for a finished request: its new children, or the error that ended it."""

    ticket: int
    children: list[Node] = field(default_factory=list)
    error: BaseException | None = None


class Engine(ABC):
    """A policy model that grows trees.

    ``ledger`` counts the engine's own work (true forward calls); each tree's ledger counts the work
    done for that problem.

    What callers may use besides the abstract methods:

    * ``tokenizer``: the policy's tokenizer (a ``transformers`` tokenizer), or None for an engine
      without one; :meth:`has_chat_template` says whether prompts may be chat messages.
    * ``max_context``: the model's context length in tokens (prompt and generation together), or
      None when the engine does not know it.
    * :meth:`release`: free what the engine keeps for a finished tree (a no-op by default).
    """

    name: str = "engine"
    tokenizer: Any = None
    max_context: int | None = None

    def __init__(self) -> None:
        self.ledger = Ledger()

    def has_chat_template(self) -> bool:
        """True when the tokenizer has a chat template (prompts may then be chat messages)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def release(self, tree: Tree) -> None:
        """Free what the engine caches for ``tree`` (call it when the tree is no longer expanded);
        engines that keep nothing per tree need not override it."""

    # -- trees --------------------------------------------------------------------------------

    @abstractmethod
    def tokenize_prompt(self, prompt: str | Sequence[dict[str, str]] | Sequence[int]) -> tuple[list[int], str]:
        """Token ids and text of a prompt: a string, chat messages (the chat template is applied)
        or token ids."""

    def new_tree(
        self, prompt: str | Sequence[dict[str, str]] | Sequence[int], *, meta: dict[str, Any] | None = None
    ) -> Tree:
        """A fresh tree whose root holds ``prompt``."""
        if prompt is None or (isinstance(prompt, (str, list, tuple)) and len(prompt) == 0):
            raise ReasonError("prompt", "is empty", "give the problem text, chat messages or token ids")
        ids, text = self.tokenize_prompt(prompt)
        if not ids:
            raise ReasonError("prompt", "tokenizes to nothing", "give non-empty text")
        return Tree(ids, text, meta=meta)

    @abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``."""

    # -- requests -----------------------------------------------------------------------------

    @abstractmethod
    def submit(self, request: ExpandRequest) -> int:
        """Queue ``request``; returns a ticket that a later :meth:`step` reports as finished."""

    @abstractmethod
    def step(self) -> list[Outcome]:
        """Advance every queued and running request by one scheduling step; returns those that
        finished."""

    @abstractmethod
    def has_work(self) -> bool:
        """True while any submitted request has not been reported finished."""

    def cancel(self, ticket: int) -> bool:
        """Stop the request ``ticket`` (its client is gone): no more tokens are generated for it,
        what it holds (KV) is freed, no children are made, and :meth:`step` never reports it.
        Call it between steps, from the thread that drives the engine. Tokens it generated
        already stay counted in the ledgers.

        Returns False when there is nothing to stop (an unknown ticket, or one already reported).
        The default, for engines that cannot stop work, returns False and lets the request run
        on; callers then ignore its outcome."""
        return False

    def expand_many(self, requests: Sequence[ExpandRequest]) -> list[list[Node]]:
        """Run ``requests`` to completion, all batched together; children per request, in order."""
        tickets = [self.submit(r) for r in requests]
        done: dict[int, Outcome] = {}
        while len(done) < len(tickets):
            if not self.has_work():
                raise RuntimeError("engine idle with requests unfinished")
            for outcome in self.step():
                done[outcome.ticket] = outcome
        results = []
        for t in tickets:
            if done[t].error is not None:
                raise done[t].error
            results.append(done[t].children)
        return results

    def expand(
        self,
        tree: Tree,
        node: Node,
        n: int = 1,
        stop: Stop | None = None,
        sampling: Sampling | None = None,
    ) -> list[Node]:
        """Synchronously give ``node`` ``n`` children (see :class:`ExpandRequest`)."""
        request = ExpandRequest(tree, node, n, stop or Stop(), sampling or Sampling())
        return self.expand_many([request])[0]

    def close(self) -> None:
        """Free the engine's resources."""
