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

from typing import Any, Sequence

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel

from rewards.base import ProcessRewardModel, StepScores, check_steps
from rewards.hf_common import left_truncate, load_pretrained, load_tokenizer, pad_id_of, pad_right, single_token_id
from reason.errors import ReasonError

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


def _label_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]


class QwenMathPRM(ProcessRewardModel):
    """Qwen2.5-Math-PRM adapter (see the module docstring).

    Options: ``step_tag`` (default ``<extra_0>``), ``system_prompt``, ``batch_size``, ``max_length``
    (longer inputs lose tokens from the left, i.e. the start of the prompt; a step whose tag would be
    cut is a one-line error).
    """

    name = "qwen"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        step_tag: str = "<extra_0>",
        system_prompt: str = QWEN_MATH_SYSTEM,
        batch_size: int = 8,
        max_length: int | None = 4096,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.step_tag = step_tag
        self.tag_id = single_token_id(tokenizer, step_tag, "step_tag")
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.max_length = max_length
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
    ) -> "QwenMathPRM":
        """Load by path or hub id; the built-in head unless ``trust_remote_code``."""
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        if trust_remote_code:
            from transformers import AutoModel

            model = load_pretrained(AutoModel, name, dtype=dtype, device=device, trust_remote_code=True)
        else:
            model = load_pretrained(Qwen2ProcessRewardHead, name, dtype=dtype, device=device)
        return cls(model, tokenizer, **options)

    def encode(self, question: str, steps: Sequence[str]) -> list[int]:
        """Token ids of one item, tags included."""
        check_steps(question, steps)
        clean = [s.replace(self.step_tag, "") for s in steps]
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": question.replace(self.step_tag, "")},
            {"role": "assistant", "content": self.step_tag.join(clean) + self.step_tag},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = left_truncate(ids, self.max_length)
        if kept.count(self.tag_id) != len(steps):
            raise ReasonError("max_length", f"{self.max_length} tokens cut off step tags", "raise max_length or score fewer steps")
        return kept

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        encoded = [self.encode(q, steps) for q, steps in items]
        device = next(self.model.parameters()).device
        scores: list[list[float]] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start : start + self.batch_size]
            ids, mask = pad_right(chunk, pad_id_of(self.tokenizer), device)
            with torch.inference_mode():
                probs = torch.softmax(_label_logits(self.model, ids, mask).float(), dim=-1)[..., 1]
            for row, seq in enumerate(chunk):
                at = torch.tensor([i for i, t in enumerate(seq) if t == self.tag_id], device=device)
                scores.append(probs[row, at].tolist())
        return StepScores(scores, sum(len(e) for e in encoded))
