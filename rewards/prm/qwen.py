"""Qwen2.5-Math-PRM: a Qwen2 decoder with a 2-label head scored at every ``<extra_0>`` tag.

Input: the Qwen chat template with the Qwen-Math system prompt, the question as the user turn and
the steps joined by ``<extra_0>`` (one after each step) as the assistant turn. A step's score is the
softmax over the two labels at its tag, positive label (index 1).

The published checkpoints ship their model class as remote code (``Qwen2ForProcessRewardModel``).
:class:`Qwen2ProcessRewardHead` is a built-in equivalent (same parameter names: ``model.*`` for the
decoder, ``score.0`` / ``score.2`` for the two-layer head), so a checkpoint of that shape loads
without ``trust_remote_code``; ``trust_remote_code=True`` loads the checkpoint's own code instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel

from reason.core.errors import ReasonError
from rewards.hf_common import load_pretrained, load_tokenizer, single_token_id
from rewards.prm.tagged import TaggedPRM, label_probability, positions_of

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class Qwen2ProcessRewardHead(Qwen2PreTrainedModel):
    """Qwen2 decoder plus the PRM head ``Linear(h, h) -> ReLU -> Linear(h, num_labels)``; returns
    per-token label logits ``[batch, seq, num_labels]``."""

    config_class = Qwen2Config

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.num_labels = getattr(config, "num_labels", 2) or 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, self.num_labels),
        )
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.score(hidden)


def _label_logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output.logits if hasattr(output, "logits") else output[0]


class QwenMathPRM(TaggedPRM):
    """Qwen2.5-Math-PRM adapter (see the module docstring).

    Options: ``step_tag`` (default ``<extra_0>``), ``system_prompt``, ``batch_tokens``, ``max_length``.
    """

    name = "qwen"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        step_tag: str = "<extra_0>",
        system_prompt: str = QWEN_MATH_SYSTEM,
        batch_tokens: int = 16384,
        max_length: int | None = 4096,
    ) -> None:
        super().__init__(model, tokenizer, batch_tokens=batch_tokens, max_length=max_length)
        self.step_tag = step_tag
        self.tag_id = single_token_id(tokenizer, step_tag, "step_tag")
        self.system_prompt = system_prompt
        if not getattr(tokenizer, "chat_template", None):
            raise ReasonError("prm", "the Qwen PRM's tokenizer has no chat template", "use the PRM's own tokenizer")

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        dtype: Any = "auto",
        device: Any = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> QwenMathPRM:
        """Load by path or hub id; the built-in head unless ``trust_remote_code``."""
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        if trust_remote_code:
            from transformers import AutoModel

            model = load_pretrained(AutoModel, name, dtype=dtype, device=device, trust_remote_code=True)
        else:
            model = load_pretrained(Qwen2ProcessRewardHead, name, dtype=dtype, device=device)
        return cls(model, tokenizer, **options)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tag = self.step_tag
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": question.replace(tag, "")},
            {"role": "assistant", "content": tag.join(s.replace(tag, "") for s in steps) + tag},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids, positions_of(ids, self.tag_id)

    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return label_probability(_label_logits(output), rows, cols, label=1)
