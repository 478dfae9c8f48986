"""Value models: from a partial solution, the expected final reward.

* :class:`LMValueModel`: a causal-LM backbone with a scalar head (``AutoModelForTokenClassification``
  with one label, or ``AutoModelForSequenceClassification`` with one label) read at the last token,
  squashed by a sigmoid into [0, 1].
* :class:`PRMValue`: a PRM's aggregated step score used as the value.
* :class:`EnsembleValue`: the mean of several value models' estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reason.core.errors import ReasonError
from rewards.base import ProcessRewardModel, ValueModel, Values
from rewards.hf_common import (
    left_truncate,
    length_batches,
    load_pretrained,
    load_tokenizer,
    pad_id_of,
    pad_right,
)
from rewards.scoring import aggregate, split_steps


class LMValueModel(ValueModel):
    """A scalar head on a causal LM, read at the last token of ``prompt_format`` filled with the
    question and the partial solution.

    ``head`` is ``"token"`` (token classification: the last real token's logit) or ``"sequence"``
    (sequence classification: the model pools the last non-pad token itself). ``activation`` is
    ``"sigmoid"`` (logit -> probability) or ``"none"``.
    """

    name = "value"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        head: str = "token",
        activation: str = "sigmoid",
        prompt_format: str = "{question}\n{partial}",
        batch_tokens: int = 16384,
        max_length: int | None = 4096,
    ) -> None:
        if head not in ("token", "sequence"):
            raise ReasonError("head", f"unknown value head {head!r}", "use token or sequence")
        if activation not in ("sigmoid", "none"):
            raise ReasonError("activation", f"unknown activation {activation!r}", "use sigmoid or none")
        if getattr(model.config, "num_labels", 1) != 1:
            raise ReasonError("value", f"the head has {model.config.num_labels} labels, not 1", "use a scalar-head checkpoint")
        self.model, self.tokenizer = model, tokenizer
        self.head, self.activation = head, activation
        self.prompt_format = prompt_format
        self.batch_tokens, self.max_length = batch_tokens, max_length
        self.forwards = 0  # model forwards run

    @classmethod
    def from_pretrained(cls, name: str, *, head: str = "token", dtype: Any = "auto", device: Any = None,
                        **options: Any) -> LMValueModel:
        """Load a scalar-head checkpoint by path or hub id."""
        from transformers import (
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        auto = AutoModelForTokenClassification if head == "token" else AutoModelForSequenceClassification
        model = load_pretrained(auto, name, field="value", dtype=dtype, device=device)
        return cls(model, load_tokenizer(name, field="value"), head=head, **options)

    def encode(self, question: str, partial: str) -> list[int]:
        """Token ids of one item (left-truncated to ``max_length``)."""
        text = self.prompt_format.format(question=question, partial=partial)
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return left_truncate(list(ids), self.max_length)

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        encoded = [self.encode(q, p) for q, p in items]
        device = next(self.model.parameters()).device
        out: list[float] = [0.0] * len(encoded)
        for group in length_batches([len(e) for e in encoded], self.batch_tokens):
            chunk = [encoded[i] for i in group]
            ids, mask = pad_right(chunk, pad_id_of(self.tokenizer), device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            self.forwards += 1
            if self.head == "token":
                last = torch.tensor([len(c) - 1 for c in chunk], device=device)
                raw = logits[torch.arange(len(chunk), device=device), last, 0]
            else:
                raw = logits[:, 0]
            for i, x in zip(group, (torch.sigmoid(raw) if self.activation == "sigmoid" else raw).tolist()):
                out[i] = x
        return Values(out, sum(len(e) for e in encoded))


class PRMValue(ValueModel):
    """A PRM's aggregated score of the partial solution's steps, used as its value."""

    name = "prm-value"

    def __init__(self, prm: ProcessRewardModel, *, delimiter: str = "\n\n", aggregation: str = "last") -> None:
        self.prm, self.delimiter, self.aggregation = prm, delimiter, aggregation
        aggregate([0.5], aggregation)  # validates the name

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        if self.aggregation == "model":
            steps = [[p.strip()] if p.strip() else [] for _, p in items]
        else:
            steps = [split_steps(p, self.delimiter) for _, p in items]
        scored = [(q, s) for (q, _), s in zip(items, steps) if s]
        result = self.prm.score_batch(scored) if scored else None
        values: list[float] = []
        it = iter(result.scores if result else [])
        for s in steps:
            values.append(aggregate(next(it), self.aggregation) if s else 0.0)
        return Values(values, result.tokens if result else 0)


class EnsembleValue(ValueModel):
    """The mean of ``members``' values of each item (an ensemble of value models, e.g. the heads of
    several training rounds or seeds); tokens fed are summed over the members."""

    name = "value-ensemble"

    def __init__(self, members: Sequence[ValueModel]) -> None:
        if not members:
            raise ReasonError("value", "an ensemble needs at least one member", "give one or more value models")
        self.members = list(members)

    def value_batch(self, items: Sequence[tuple[str, str]]) -> Values:
        results = [m.value_batch(items) for m in self.members]
        values = [sum(r.values[i] for r in results) / len(results) for i in range(len(items))]
        return Values(values, sum(r.tokens for r in results))
