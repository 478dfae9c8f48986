"""Fine-tuning a value head or a PRM on tree targets with transformers' ``Trainer``.

Both start from any causal LM checkpoint (by default the policy's own weights, which already do
the task a scorer must check): ``AutoModelForTokenClassification`` loads its backbone and adds a
fresh head, one label for a value model and two for a PRM. Inputs are encoded by the adapters that
will read the checkpoint (:class:`rewards.value.LMValueModel`,
:class:`rewards.prm.token_classification.TokenClassificationPRM`), so training and scoring see the
same tokens, and the saved directory loads directly as ``--value lm=DIR`` / ``--prm
token-classification=DIR`` (the PRM's separators are kept in its config as ``reason_prm``).

Targets are soft (an MC value or a step label in [0, 1]): the pointwise loss is the binary
cross-entropy of the head's probability against the target, each item weighted by
``min(count, count_cap)`` (a value resting on more graded samples counts more, the root's hundreds
no more than ``count_cap``). With ``pair_weight > 0`` the sibling preference pairs
(:class:`~rewards.learn.targets.PreferencePair`) add a Bradley-Terry loss,
``-log sigmoid(s(prefix + chosen) - s(prefix + rejected))`` on the head's logits, times
``pair_weight``: the pointwise targets mostly teach how hard a problem is, the pairs are the signal
*within* a problem (which of two next steps is better), which is what a search needs.
Value targets of one problem whose texts extend each other (a node and the nodes below it) share
one row, each read at its own last token (:func:`pack_prefixes`): the same loss, fewer forwards.
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
from rewards.learn.targets import PreferencePair, StepLabels, ValueTarget
from rewards.prm.token_classification import TokenClassificationPRM
from rewards.value import LMValueModel

VALUE_PAIR_WEIGHT = 0.0
"""``reason train-value``'s default ``pair_weight``: on arith level 3 the pairs raised the value head's
held-out pair accuracy and within-problem AUC a little but not MCTS's accuracy (benchmarks/RESULTS.md,
"Within-problem training"), so they stay opt-in."""
PRM_PAIR_WEIGHT = 0.0
"""``reason train-prm``'s default ``pair_weight``: the same for a PRM and best-of-16 (better in one seed,
worse in another)."""

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
    pair_weight: float = Field(0.0, ge=0, description="weight of the Bradley-Terry loss on preference pairs (0: off)")
    pair_repeat: int = Field(1, ge=1, description="times each preference pair is shown per epoch (pairs are few)")
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
    """Batch point rows (``input_ids`` with targets at ``positions``) and pair rows (``chosen`` /
    ``rejected`` ids, each scored at its last token) into one padded batch; ``pairs`` holds
    ``(chosen row, chosen position, rejected row, rejected position)``."""
    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs: list[list[int]] = []
        points: list[tuple[int, int, float, float]] = []
        pairs: list[tuple[int, int, int, int]] = []
        pair_weights: list[float] = []
        for r in rows:
            if "chosen" in r:
                at = len(seqs)
                seqs += [r["chosen"], r["rejected"]]
                pairs.append((at, len(r["chosen"]) - 1, at + 1, len(r["rejected"]) - 1))
                pair_weights.append(r["weight"])
            else:
                points += [(len(seqs), p, y, w) for p, y, w in zip(r["positions"], r["targets"], r["weights"])]
                seqs.append(r["input_ids"])
        width = max(len(ids) for ids in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        targets = torch.full((len(seqs), width), -1.0)  # -1: no target at this position
        weights = torch.zeros((len(seqs), width))
        for i, pos, y, w in points:
            targets[i, pos], weights[i, pos] = y, w
        return {"input_ids": ids, "attention_mask": mask, "targets": targets, "weights": weights,
                "pairs": torch.tensor(pairs, dtype=torch.long).reshape(-1, 4),
                "pair_weights": torch.tensor(pair_weights, dtype=torch.float32)}

    return collate


def head_score(logits: torch.Tensor) -> torch.Tensor:
    """The head's logit per position: a one-label head's logit, or label 1's logit over label 0's."""
    return logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy at the positions with a target (``targets >= 0``) of the
    :func:`head_score` logits; zero when no position has one."""
    keep = targets >= 0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(head_score(logits)[keep].float(), targets[keep], reduction="none")
    w = weights[keep]
    return (loss * w).sum() / w.sum().clamp_min(1e-8)


def pair_loss(logits: torch.Tensor, pairs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted Bradley-Terry loss ``-log sigmoid(s_chosen - s_rejected)`` of the :func:`head_score`
    logits at ``pairs``' positions (rows of ``(chosen row, pos, rejected row, pos)``); zero without pairs."""
    if not len(pairs):
        return logits.sum() * 0.0
    score = head_score(logits).float()
    margin = score[pairs[:, 0], pairs[:, 1]] - score[pairs[:, 2], pairs[:, 3]]
    return (-torch.nn.functional.logsigmoid(margin) * weights).sum() / weights.sum().clamp_min(1e-8)


def _trainer_class(pair_weight: float):
    from transformers import Trainer

    class SoftTargetTrainer(Trainer):
        """``Trainer`` with :func:`soft_loss` on the collated targets plus ``pair_weight`` times
        :func:`pair_loss` on the collated pairs."""

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            targets, weights = inputs.pop("targets"), inputs.pop("weights")
            pairs, pair_weights = inputs.pop("pairs"), inputs.pop("pair_weights")
            outputs = model(**inputs)
            loss = soft_loss(outputs.logits, targets, weights)
            if pair_weight:
                loss = loss + pair_weight * pair_loss(outputs.logits, pairs, pair_weights)
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
    trainer = _trainer_class(config.pair_weight)(model=model, args=args, train_dataset=_Items(rows), data_collator=_collate(pad_id_of(tok)))
    result = trainer.train()
    model.eval()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.out)
    tok.save_pretrained(config.out)
    return {"loss": float(result.training_loss), "steps": float(result.global_step), "items": float(len(rows))}


def pack_prefixes(items: Sequence[tuple[str, list[int], float, float]]) -> list[dict[str, Any]]:
    """Point rows from ``(group, ids, target, weight)`` items, each read at its last token: an item
    whose ids are a prefix of a longer item's of the same group (a node and a node below it) rides
    on that item's row, its target at its own last position. A causal model's output at a position
    sees only the tokens up to it, so the loss is the one of separate rows, with one forward pass
    per path instead of one per node."""
    groups: dict[str, list[tuple[list[int], float, float]]] = {}
    for group, ids, target, weight in items:
        groups.setdefault(group, []).append((ids, target, weight))
    rows: list[dict[str, Any]] = []
    for members in groups.values():
        mine: list[dict[str, Any]] = []
        for ids, target, weight in sorted(members, key=lambda m: -len(m[0])):
            at = len(ids) - 1
            row = next((r for r in mine if r["input_ids"][:len(ids)] == ids and at not in r["positions"]), None)
            if row is None:
                row = {"input_ids": ids, "positions": [], "targets": [], "weights": []}
                mine.append(row)
            row["positions"].append(at)
            row["targets"].append(target)
            row["weights"].append(weight)
        rows += mine
    return rows


def _pair_rows(pairs: Sequence[PreferencePair], encode: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """One row per pair (``pair_repeat`` times; none unless ``pair_weight > 0``): ``encode(question,
    text)`` gives the ids of ``prefix + chosen`` and ``prefix + rejected``, each scored at its last token."""
    if not config.pair_weight:
        return []
    rows = []
    for pair in pairs:
        chosen, rejected = encode(pair.question, pair.prefix + pair.chosen), encode(pair.question, pair.prefix + pair.rejected)
        if chosen and rejected and max(len(chosen), len(rejected)) <= config.max_length:
            weight = float(min(pair.chosen_count, pair.rejected_count, config.count_cap))
            rows.append({"chosen": chosen, "rejected": rejected, "weight": weight})
    return rows * config.pair_repeat


def train_value_head(targets: Sequence[ValueTarget], config: TrainConfig, pairs: Sequence[PreferencePair] = ()
                     ) -> tuple[LMValueModel, dict[str, float]]:
    """Fine-tune a one-label head (read at the last token) on value targets (and, with
    ``config.pair_weight``, on preference ``pairs``); returns the trained model wrapped for scoring
    and the run's summary. The checkpoint is written to ``config.out``."""
    model, tok = _load_backbone(config.base, 1, config.device, config.seed)
    valuer = LMValueModel(model, tok, max_length=config.max_length)
    rows = pack_prefixes([(t.question, valuer.encode(t.question, t.partial), t.value, float(min(t.count, config.count_cap)))
                          for t in targets])
    rows += _pair_rows(pairs, valuer.encode, config)
    summary = _fit(model, tok, rows, config)
    return valuer, summary


def train_step_prm(items: Sequence[StepLabels], config: TrainConfig, *, separator: str = "\n\n",
                   question_separator: str = "", pairs: Sequence[PreferencePair] = ()
                   ) -> tuple[TokenClassificationPRM, dict[str, float]]:
    """Fine-tune a two-label token-classification PRM on per-step labels (each read at its step's
    separator) and, with ``config.pair_weight``, on preference ``pairs`` (each side scored at the
    last step of ``prefix + chosen`` / ``prefix + rejected``); the checkpoint keeps the
    separators, so ``--prm token-classification=DIR`` reads steps the way it was trained."""
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

    def encode(question: str, text: str) -> list[int]:
        steps = [piece for piece in text.split(separator) if piece.strip()]
        return prm.encode(question, steps)[0] if steps else []

    rows += _pair_rows(pairs, encode, config)
    summary = _fit(model, tok, rows, config)
    return prm, summary
