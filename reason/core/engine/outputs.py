"""Turning a server's or library's sampled outputs into tree children, for backends that do not
decode themselves (``openai``, ``vllm``).

Both report an OpenAI-style ``finish_reason`` (``"stop"`` / ``"length"``) and vLLM's
``stop_reason`` (None for end-of-sequence, the stop string, or the stop token id); the tree keeps
the finer reasons the ``hf`` engine gives (``eos``, ``stop``, ``segment``, ``length``).

A server reports one kind of per-token logprob, or two: the model's own (temperature 1, unfiltered:
vLLM's ``logprobs_mode="raw_logprobs"``, its default) and the sampling distribution's (temperature,
top-k and top-p applied: vLLM's ``"processed_logprobs"``). A :class:`Sampled` carries each kind it
got in its own field and leaves the other empty; the tree's nodes keep them apart the same way
(:attr:`~reason.core.tree.Node.logprobs`, :attr:`~reason.core.tree.Node.sampling_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reason.core.engine.base import Engine, ExpandRequest, Stop
from reason.core.errors import ReasonError
from reason.core.tree import FinishReason, Node

ServerLogprobs = Literal["raw_logprobs", "processed_logprobs"]
"""What a vLLM-style server's per-token logprobs are (vLLM's ``--logprobs-mode`` names)."""
SERVER_LOGPROBS: tuple[ServerLogprobs, ...] = ("raw_logprobs", "processed_logprobs")


@dataclass
class Sampled:
    """One sampled continuation: its token ids, the model's own logprobs of them (``logprobs``),
    their logprobs under the sampling distribution (``sampling_logprobs``), each empty when the
    server did not report that kind, and the tree's finish reason."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    sampling_logprobs: list[float] = field(default_factory=list)

    @classmethod
    def reported(cls, token_ids: list[int], logprobs: list[float], finish_reason: FinishReason,
                 mode: str = "raw_logprobs") -> Sampled:
        """A sample whose server reported ``logprobs`` of kind ``mode`` (:data:`ServerLogprobs`)."""
        check_server_logprobs(mode)
        if mode == "processed_logprobs":
            return cls(token_ids, [], finish_reason, logprobs)
        return cls(token_ids, logprobs, finish_reason)


def record_logprobs(mode: str) -> Literal["raw", "sampling"]:
    """The kind of rollout-record logprobs (:data:`search.records.LogprobsMode`) a server whose
    logprobs are ``mode`` provides: ``"sampling"`` for ``"processed_logprobs"``, else ``"raw"``."""
    check_server_logprobs(mode)
    return "sampling" if mode == "processed_logprobs" else "raw"


def check_server_logprobs(mode: str) -> None:
    """Raise :class:`ReasonError` unless ``mode`` names per-token logprobs this toolkit can keep."""
    if mode not in SERVER_LOGPROBS:
        raise ReasonError("logprobs_mode", f"{mode!r} is not a kind of per-token logprob kept here",
                          f"serve with one of {', '.join(SERVER_LOGPROBS)}")


def finish_reason(finish: str | None, stop_reason: Any, stop: Stop, n_tokens: int) -> FinishReason:
    """The tree's finish reason from an OpenAI ``finish_reason`` and vLLM ``stop_reason``."""
    if finish == "stop":
        return "eos" if stop_reason is None else "stop"
    if stop.segment_tokens is not None and n_tokens == stop.segment_tokens:
        return "segment"
    return "length"


def first_finished(lengths: Sequence[int], first: int | None) -> list[int]:
    """Indices of the outputs a request with ``first=k`` keeps: those that would have finished by
    the step the k-th did, decoding one token per step in lockstep (all of them when ``first`` is
    None)."""
    if first is None:
        return list(range(len(lengths)))
    cut = sorted(lengths)[first - 1]
    return [i for i, n in enumerate(lengths) if n <= cut]


def add_children(engine: Engine, request: ExpandRequest, node_ids: Sequence[int], outputs: Sequence[Sampled]) -> list[Node]:
    """Add ``outputs`` (in child order) as children of the request's node, with the ids reserved at
    submission; the text leaves out a final end-of-sequence token, as the ``hf`` engine does."""
    tree = request.tree
    if len(outputs) != request.n:
        raise ReasonError("server", f"answered {len(outputs)} samples for n={request.n}", "check its n support")
    if request.node not in tree:
        raise ReasonError("node", "was pruned while it was being expanded", "do not prune pending nodes")
    children = []
    for i in first_finished([len(o.token_ids) for o in outputs], request.first):
        out = outputs[i]
        if not out.logprobs and not out.sampling_logprobs:
            raise ReasonError("server", "returned no per-token logprobs", "use a server that supports logprobs")
        if any(lps and len(lps) != len(out.token_ids) for lps in (out.logprobs, out.sampling_logprobs)):
            raise ReasonError("server", "returned logprobs for some tokens only", "use a server that supports logprobs")
        text = engine.decode(out.token_ids[:-1] if out.finish_reason == "eos" else out.token_ids)
        children.append(tree.add_child(request.node, out.token_ids, text, out.logprobs or None, out.finish_reason,
                                       node_ids[i], sampling_logprobs=out.sampling_logprobs or None))
        tree.ledger.generated_tokens += len(out.token_ids)
        engine.ledger.generated_tokens += len(out.token_ids)
    return children


def request_ids(request: ExpandRequest, max_context: int) -> list[int]:
    """The token ids of the path a request expands (validated, and leaving room in the context)."""
    request.validate()
    ids = request.tree.prefix_ids(request.node)
    if len(ids) >= max_context:
        raise ReasonError("node", f"its path already fills the model's context ({max_context} tokens)",
                          "expand a shorter path")
    return ids


def max_new_tokens(stop: Stop, room: int) -> int:
    """The token cap to ask for: the stop's caps and the context room, whichever is least."""
    return min([room] + [x for x in (stop.max_tokens, stop.segment_tokens) if x is not None])
