"""Math-Shepherd PRMs: a causal LM that predicts "+" or "-" at a step tag (``ки``) after each step.

Input: ``question + " " + steps``, each step followed by ``" ки"`` and a newline. A step's score is
the softmax over the LM's logits of the two candidate tokens ("+", "-") at its tag, taking "+".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reason.core.errors import ReasonError
from rewards.hf_common import load_pretrained, load_tokenizer, single_token_id
from rewards.prm.tagged import TaggedPRM, pair_probability, positions_of


def _logits(output: Any) -> torch.Tensor:
    return output.logits


class MathShepherdPRM(TaggedPRM):
    """Math-Shepherd adapter (options: ``step_tag``, ``good``, ``bad``, ``batch_tokens``, ``max_length``)."""

    name = "math-shepherd"

    def __init__(self, model: Any, tokenizer: Any, *, step_tag: str = "ки", good: str = "+", bad: str = "-",
                 batch_tokens: int = 16384, max_length: int | None = 4096) -> None:
        super().__init__(model, tokenizer, batch_tokens=batch_tokens, max_length=max_length)
        self.step_tag = step_tag
        # The tag always follows a space, so take the id the tokenizer gives it there.
        self.tag_id = _spaced_id(tokenizer, step_tag)
        self.good_id = single_token_id(tokenizer, good, "good")
        self.bad_id = single_token_id(tokenizer, bad, "bad")

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: Any = "auto", device: Any = None, **options: Any) -> MathShepherdPRM:
        """Load by path or hub id."""
        from transformers import AutoModelForCausalLM

        return cls(load_pretrained(AutoModelForCausalLM, name, dtype=dtype, device=device), load_tokenizer(name), **options)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tag = self.step_tag
        body = "\n".join(f"{s.replace(tag, '').strip()} {tag}" for s in steps)
        ids = list(self.tokenizer(f"{question.replace(tag, '')} {body}", add_special_tokens=True)["input_ids"])
        return ids, positions_of(ids, self.tag_id)

    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return pair_probability(_logits(output), rows, cols, self.good_id, self.bad_id)


def _spaced_id(tokenizer: Any, tag: str) -> int:
    ids = tokenizer.encode(f"x {tag}", add_special_tokens=False)
    if ids and tokenizer.decode(ids[-1:]).strip() == tag:
        return int(ids[-1])
    raise ReasonError("step_tag", f"the tokenizer has no single token for {tag!r}", "use the PRM's own tokenizer or set step_tag")
