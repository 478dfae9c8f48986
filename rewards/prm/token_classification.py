"""TRL-style token-classification PRMs (``AutoModelForTokenClassification``, two labels).

Input ids: the BOS token (if the tokenizer has one), the question, the ``question_separator``'s ids
(none by default, as TRL writes them), then each step's ids followed by the separator's ids; a
step's label sits on the separator's last token; the score is the softmax probability of label 1.
A checkpoint trained here (``reason train-prm``) keeps its separators in its config under
``reason_prm``; they are the defaults when it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reason.core.errors import ReasonError
from rewards.hf_common import load_pretrained, load_tokenizer
from rewards.prm.tagged import TaggedPRM, label_probability


class TokenClassificationPRM(TaggedPRM):
    """Token-classification PRM adapter (options: ``separator``, ``question_separator``, ``batch_tokens``,
    ``max_length``)."""

    name = "token-classification"

    def __init__(self, model: Any, tokenizer: Any, *, separator: str = "\n\n", question_separator: str = "",
                 batch_tokens: int = 16384, max_length: int | None = 4096) -> None:
        super().__init__(model, tokenizer, batch_tokens=batch_tokens, max_length=max_length)
        if getattr(model.config, "num_labels", 2) != 2:
            raise ReasonError("prm", f"the head has {model.config.num_labels} labels, not 2", "use a two-label checkpoint")
        self.separator_ids = list(tokenizer(separator, add_special_tokens=False)["input_ids"])
        if not self.separator_ids:
            raise ReasonError("separator", f"{separator!r} tokenizes to nothing", "give a non-empty separator")
        self.question_ids = list(tokenizer(question_separator, add_special_tokens=False)["input_ids"]) if question_separator else []

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: Any = "auto", device: Any = None, **options: Any) -> TokenClassificationPRM:
        """Load by path or hub id."""
        from transformers import AutoModelForTokenClassification

        model = load_pretrained(AutoModelForTokenClassification, name, dtype=dtype, device=device)
        saved = getattr(model.config, "reason_prm", None)
        for key, value in (saved.items() if isinstance(saved, dict) else ()):
            if key in ("separator", "question_separator") and isinstance(value, str):
                options.setdefault(key, value)
        return cls(model, load_tokenizer(name), **options)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + list(tok(question, add_special_tokens=False)["input_ids"])
        ids += self.question_ids
        positions = []
        for step in steps:
            ids += list(tok(step, add_special_tokens=False)["input_ids"]) + self.separator_ids
            positions.append(len(ids) - 1)
        return ids, positions

    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return label_probability(output.logits, rows, cols, label=1)
