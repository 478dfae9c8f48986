"""Fine-tuning a value head or a PRM on tree targets with transformers' ``Trainer``.

Both start from any causal LM checkpoint (by default the policy's own weights, which already do
the task a scorer must check): ``AutoModelForTokenClassification`` loads its backbone and adds a
fresh head, one label for a value model and two for a PRM. Inputs are encoded by the adapters that
will read the checkpoint (:class:`rewards.value.LMValueModel`,
:class:`rewards.prm.token_classification.TokenClassificationPRM`), so training and scoring see the
same tokens, and the saved directory loads directly as ``--value lm=DIR`` / ``--prm
token-classification=DIR`` (the PRM's separators are kept in its config as ``reason_prm``).

Targets are soft (an MC value or a step label in [0, 1]): the loss is the binary cross-entropy of
the head's probability against the target, each item weighted by ``min(count, count_cap)`` (a
value resting on more graded samples counts more, the root's hundreds no more than ``count_cap``).
``Trainer`` brings the progress bar, the seed, the learning-rate schedule and devices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from reason.core.errors import ReasonError
from rewards.hf_common import load_tokenizer, pad_id_of
from rewards.learn.targets import StepLabels, ValueTarget
from rewards.prm.token_classification import TokenClassificationPRM
from rewards.value import LMValueModel

PRM_CONFIG_KEY = "reason_prm"
"""The config entry where a trained PRM keeps its ``separator`` and ``question_separator``."""


class TrainConfig(BaseModel):
    """What a training run takes (the command line's options)."""

    base: str = Field(description="the causal LM checkpoint the backbone starts from")
    out: str
    epochs: float = Field(3.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)
    count_cap: int = Field(8, ge=1)
    seed: int = 0
    max_length: int = Field(1024, ge=8)
    device: str | None = None
    progress: bool = True


def _load_backbone(base: str, num_labels: int, device: str | None, seed: int) -> tuple[Any, Any]:
    from transformers import AutoModelForTokenClassification, set_seed
    from transformers.utils import logging as hf_logging

    set_seed(seed)  # the fresh head's initial weights come from the seed too

    hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" notice is expected
    try:
        model = AutoModelForTokenClassification.from_pretrained(base, num_labels=num_labels, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ReasonError("model", f"cannot load {base!r} with a token-classification head ({str(exc).splitlines()[0][:160]})",
                          "give a causal LM checkpoint directory whose architecture has a ForTokenClassification class") from None
    tok = load_tokenizer(base, field="model")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_id_of(tok)
    if device:
        model.to(device)
    return model, tok


class _Items(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _collate(pad_id: int):
    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        targets = torch.full((len(rows), width), -1.0)  # -1: no target at this position
        weights = torch.zeros((len(rows), width))
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            for pos, y, w in zip(r["positions"], r["targets"], r["weights"]):
                targets[i, pos], weights[i, pos] = y, w
        return {"input_ids": ids, "attention_mask": mask, "targets": targets, "weights": weights}

    return collate


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy at the positions with a target (``targets >= 0``): one-label
    logits are the value's logit, two-label logits give the logit of label 1 over label 0."""
    score = logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]
    keep = targets >= 0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(score[keep].float(), targets[keep], reduction="none")
    w = weights[keep]
    return (loss * w).sum() / w.sum().clamp_min(1e-8)


def _trainer_class():
    from transformers import Trainer

    class SoftTargetTrainer(Trainer):
        """``Trainer`` with :func:`soft_loss` on the collated targets."""

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            targets, weights = inputs.pop("targets"), inputs.pop("weights")
            outputs = model(**inputs)
            loss = soft_loss(outputs.logits, targets, weights)
            return (loss, outputs) if return_outputs else loss

    return SoftTargetTrainer


def _fit(model: Any, tok: Any, rows: list[dict[str, Any]], config: TrainConfig) -> dict[str, float]:
    from transformers import TrainingArguments, set_seed

    set_seed(config.seed)
    if not rows:
        raise ReasonError("targets", "there is nothing to train on", "give trees whose finished leaves can be graded")
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    try:
        import accelerate  # noqa: F401  (Trainer needs it; a one-line error beats its traceback)
    except ImportError:
        raise ReasonError("train", "transformers' Trainer needs accelerate", "pip install 'reason[train]'") from None
    args = TrainingArguments(
        output_dir=str(Path(config.out) / "trainer"), per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr, weight_decay=config.weight_decay, num_train_epochs=config.epochs,
        max_steps=config.max_steps, warmup_steps=config.warmup_steps, lr_scheduler_type="linear", seed=config.seed,
        data_seed=config.seed, logging_steps=max(1, steps_per_epoch // 2), save_strategy="no", report_to=[],
        logging_strategy="steps" if config.progress else "no",
        disable_tqdm=not config.progress, remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=config.device == "cpu" or not torch.cuda.is_available(),
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=_Items(rows), data_collator=_collate(pad_id_of(tok)))
    result = trainer.train()
    model.eval()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)
    tok.save_pretrained(config.out)
    return {"loss": float(result.training_loss), "steps": float(result.global_step), "items": float(len(rows))}


def train_value_head(targets: Sequence[ValueTarget], config: TrainConfig) -> tuple[LMValueModel, dict[str, float]]:
    """Fine-tune a one-label head (read at the last token) on value targets; returns the trained
    model wrapped for scoring and the run's summary. The checkpoint is written to ``config.out``."""
    model, tok = _load_backbone(config.base, 1, config.device, config.seed)
    valuer = LMValueModel(model, tok, max_length=config.max_length)
    rows = []
    for t in targets:
        ids = valuer.encode(t.question, t.partial)
        rows.append({"input_ids": ids, "positions": [len(ids) - 1], "targets": [t.value],
                     "weights": [float(min(t.count, config.count_cap))]})
    summary = _fit(model, tok, rows, config)
    return valuer, summary


def train_step_prm(items: Sequence[StepLabels], config: TrainConfig, *, separator: str = "\n\n",
                   question_separator: str = "") -> tuple[TokenClassificationPRM, dict[str, float]]:
    """Fine-tune a two-label token-classification PRM on per-step labels (each read at its step's
    separator); the checkpoint keeps the separators, so ``--prm token-classification=DIR`` reads
    steps the way it was trained."""
    model, tok = _load_backbone(config.base, 2, config.device, config.seed)
    setattr(model.config, PRM_CONFIG_KEY, {"separator": separator, "question_separator": question_separator})
    prm = TokenClassificationPRM(model, tok, separator=separator, question_separator=question_separator,
                                 max_length=config.max_length)
    rows = []
    for item in items:
        ids, positions = prm.encode(item.question, item.steps)
        if len(ids) > config.max_length:
            continue
        rows.append({"input_ids": ids, "positions": positions, "targets": list(item.labels),
                     "weights": [float(min(c, config.count_cap)) for c in item.counts]})
    summary = _fit(model, tok, rows, config)
    return prm, summary
