"""RLHFlow PRMs (Llama3.1-8B-PRM-Deepseek-Data / -Mistral-Data): a chat LM judging each step.

The conversation has one user turn per step (the first is ``question + " " + step_1``), each
answered by an assistant turn ``"+"``. Step ``k``'s score is the softmax over the logits of "+" and
"-" at the position that predicts turn ``k``'s "+". The whole conversation is one forward; the "+"
positions are found from the chat template's rendering, never by searching for "+" in the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reason.core.errors import ReasonError
from rewards.hf_common import load_pretrained, load_tokenizer
from rewards.prm.tagged import TaggedPRM, pair_probability


class RLHFlowPRM(TaggedPRM):
    """RLHFlow adapter (options: ``good``, ``bad``, ``batch_tokens``, ``max_length``)."""

    name = "rlhflow"

    def __init__(self, model: Any, tokenizer: Any, *, good: str = "+", bad: str = "-", batch_tokens: int = 16384,
                 max_length: int | None = 4096) -> None:
        super().__init__(model, tokenizer, batch_tokens=batch_tokens, max_length=max_length)
        if not getattr(tokenizer, "chat_template", None):
            raise ReasonError("prm", "the RLHFlow PRM's tokenizer has no chat template", "use the PRM's own tokenizer")
        self.good, self.bad = good, bad
        self.good_id = int(tokenizer.encode(good, add_special_tokens=False)[-1])
        self.bad_id = int(tokenizer.encode(bad, add_special_tokens=False)[-1])

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: Any = "auto", device: Any = None, **options: Any) -> RLHFlowPRM:
        """Load by path or hub id."""
        from transformers import AutoModelForCausalLM

        return cls(load_pretrained(AutoModelForCausalLM, name, dtype=dtype, device=device), load_tokenizer(name), **options)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        conv: list[dict[str, str]] = []
        answer_chars: list[int] = []
        for k, step in enumerate(steps):
            conv.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            # Where turn k's assistant text starts: the rendering of everything before it plus the
            # assistant header (templates render a conversation's prefix as a prefix of the text).
            answer_chars.append(len(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)))
            conv.append({"role": "assistant", "content": self.good})
        text = tok.apply_chat_template(conv, tokenize=False)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        positions = []
        for char in answer_chars:
            if not text.startswith(self.good, char):
                raise ReasonError("prm", "the chat template does not render the '+' turns in place", "use the PRM's own tokenizer")
            token = next(i for i, (a, b) in enumerate(offsets) if a <= char < b)
            positions.append(token - 1)
        return ids, positions

    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return pair_probability(output.logits, rows, cols, self.good_id, self.bad_id)
