"""The shared shape of discriminative PRMs: encode an item into token ids plus the positions where
its step scores are read, run padded batches, read a score at each position.

Each adapter supplies :meth:`TaggedPRM.encode` (its input format) and :meth:`TaggedPRM.read` (how a
score comes out of the model at a position). Batches are right-padded, so padding never moves a
position; inputs longer than ``max_length`` lose tokens from the left (the start of the question),
and an input that would lose a scored position is a one-line error.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from reason.core.errors import ReasonError
from rewards.base import ProcessRewardModel, StepScores, check_steps
from rewards.hf_common import length_batches, pad_id_of, pad_right


class TaggedPRM(ProcessRewardModel):
    """Base class of the transformers PRM adapters (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_tokens: int = 16384, max_length: int | None = 4096) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self.forwards = 0  # model forwards run

    @abstractmethod
    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of one item and the position of each step's score, in step order."""

    @abstractmethod
    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1] at ``(rows[i], cols[i])`` from the model's ``output`` on a batch."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> Any:
        """The model's output on a padded batch."""
        return self.model(input_ids=ids, attention_mask=mask)

    def prepare(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of one item as the model sees it (left-truncated to ``max_length``) and the
        position of each step's score; needs only the tokenizer (vLLM-served PRMs format with it)."""
        check_steps(question, steps)
        ids, positions = self.encode(question, steps)
        if len(positions) != len(steps):
            raise ReasonError("step_tag", f"found {len(positions)} step positions for {len(steps)} steps", "check the input format")
        if self.max_length is not None and len(ids) > self.max_length:
            cut = len(ids) - self.max_length
            if positions and positions[0] < cut:
                raise ReasonError("max_length", f"{self.max_length} tokens would cut off scored steps", "raise max_length")
            ids = ids[cut:]
            positions = [p - cut for p in positions]
        return ids, positions

    _prepare = prepare

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        prepared = [self.prepare(q, steps) for q, steps in items]
        device = next(self.model.parameters()).device
        out: list[list[float]] = [[] for _ in prepared]
        for group in length_batches([len(ids) for ids, _ in prepared], self.batch_tokens):
            chunk = [prepared[i] for i in group]
            ids, mask = pad_right([c[0] for c in chunk], pad_id_of(self.tokenizer), device)
            rows = torch.tensor([r for r, (_, pos) in enumerate(chunk) for _ in pos], device=device)
            cols = torch.tensor([p for _, pos in chunk for p in pos], device=device)
            with torch.inference_mode():
                flat = self.read(self.forward(ids, mask), rows, cols).float().tolist()
            self.forwards += 1
            at = 0
            for i, (_, pos) in zip(group, chunk):
                out[i] = flat[at : at + len(pos)]
                at += len(pos)
        return StepScores(out, sum(len(c[0]) for c in prepared))


def pair_probability(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    """P(good) from the softmax over the two candidate tokens' logits at each position."""
    picked = logits[rows, cols][:, [good, bad]].float()
    return torch.softmax(picked, dim=-1)[:, 0]


def label_probability(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, label: int = 1) -> torch.Tensor:
    """Softmax probability of ``label`` over a classification head's labels at each position."""
    return torch.softmax(logits[rows, cols].float(), dim=-1)[:, label]


def positions_of(ids: list[int], token_id: int) -> list[int]:
    """Every index where ``token_id`` occurs."""
    return [i for i, t in enumerate(ids) if t == token_id]
