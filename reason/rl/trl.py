"""TRL: a ``rollout_func`` for ``GRPOTrainer`` that grows tree rollouts with this toolkit.

``GRPOTrainer(..., rollout_func=TreeRollout(...))`` replaces TRL's own sampling: each call receives
the trainer's prompt slice and returns ``prompt_ids`` / ``completion_ids`` / ``logprobs`` with the
trainer's group size (``num_generations``) per distinct prompt. The engine shares the trainer's model
object, so after every optimizer step it only drops the KV computed under the old weights
(:meth:`~reason.core.engine.hf.HFEngine.update_weights`); nothing is copied or rebuilt. Each call's
records (rewards, tree advantages, segment ends) are kept on ``last_records`` and also forwarded to
the reward functions as ``tree_reward`` / ``tree_advantage`` keyword arguments.

Each call returns exactly ``num_generations`` completions per prompt: a leaf that stands for ``k``
identical samples (a merged node) is ``k`` of them. The ``logprobs`` returned are the sampling
distribution's by default (``logprobs="sampling"``: temperature, top-k and top-p applied), which is
what TRL's importance-sampling correction compares its temperature-scaled policy logprobs against
(TRL asks its vLLM server for ``processed_logprobs`` for the same reason); ``logprobs="raw"``
returns the model's own instead.

TRL normalises rewards within each group of ``num_generations``, which ignores the tree.
:func:`tree_grpo_trainer` builds a ``GRPOTrainer`` subclass that trains on the records' tree
advantages instead: TreePO's aggregate over the subtrees each leaf belongs to (one per completion),
or per-segment credit (one per token, TRL's (B, T) advantages).
"""

from __future__ import annotations

from typing import Any

import reason
from reason.core.engine.hf import HFEngine
from reason.core.errors import ReasonError
from search.records import check_logprobs_mode


class TreeRollout:
    """A TRL ``rollout_func`` (see the module docstring).

    ``strategy`` / ``options``: what :func:`reason.rollout` runs (TreePO segments by default);
    ``reward`` / ``answers_key`` / ``verifier``: where rewards for the tree advantages come from
    (a ``reward(prompt_index, text)`` function, or a verifier against the dataset column named
    ``answers_key``, looked up by prompt through ``answers``); ``logprobs``: the kind returned
    (``"sampling"`` or ``"raw"``, see the module docstring)."""

    def __init__(self, *, strategy: str = "treepo", answers: dict[str, str] | None = None, verifier: Any = "arith",
                 reward: Any = None, seed: int = 0, max_tokens: int = 256, temperature: float = 1.0,
                 draft: str | None = None, logprobs: str = "sampling", **options: Any) -> None:
        check_logprobs_mode(logprobs)
        self.logprobs = logprobs
        self.strategy = strategy
        self.answers = answers
        self.verifier = verifier
        self.reward = reward
        self.seed = seed
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.draft = draft
        self.options = options
        self.engine: HFEngine | None = None
        self._step = -1
        self.calls = 0
        self.last_records: list[Any] = []

    def _engine(self, trainer: Any) -> HFEngine:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self.engine is None or self.engine.model is not model:
            self.engine = HFEngine(model, trainer.processing_class, draft=self.draft)
            self._step = trainer.state.global_step
        elif trainer.state.global_step != self._step:  # an optimizer step changed the shared weights
            self.engine.update_weights()
            self._step = trainer.state.global_step
        return self.engine

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        engine = self._engine(trainer)
        group = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        distinct: list[Any] = []
        counts: list[int] = []
        for p in prompts:  # TRL hands each prompt over once per generation, consecutively
            if distinct and p == distinct[-1] and counts[-1] < group:
                counts[-1] += 1
            else:
                distinct.append(p)
                counts.append(1)
        per_prompt = max(counts) if max(counts) > 1 else group
        was_training = engine.model.training
        engine.model.eval()
        try:
            answers = [self.answers[_key(p)] for p in distinct] if self.answers is not None else None
            records = reason.rollout(engine, distinct, strategy=self.strategy, n=per_prompt, seed=self.seed + self.calls,
                                     reward=self.reward, answers=answers, verifier=None if self.reward else self.verifier,
                                     max_tokens=self.max_tokens, temperature=self.temperature,
                                     logprobs=self.logprobs, **self.options)
        finally:
            engine.model.train(was_training)
        self.calls += 1
        out = []
        for index, count in enumerate(counts if max(counts) > 1 else [group] * len(distinct)):
            out += [r for r in records if r.prompt_index == index][:count]
        self.last_records = out
        return {
            "prompt_ids": [r.prompt_ids for r in out],
            "completion_ids": [r.completion_ids for r in out],
            "logprobs": [r.logprobs for r in out],
            "tree_reward": [r.reward for r in out],
            "tree_advantage": [r.advantage for r in out],
        }


def _key(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return str(prompt[-1]["content"]) if prompt and isinstance(prompt[0], dict) else str(prompt)


def tree_grpo_trainer(*, per: str = "leaf", **kwargs: Any) -> Any:
    """A ``trl.GRPOTrainer`` (same keyword arguments; ``rollout_func`` must be a :class:`TreeRollout`)
    whose advantages come from the rollout records rather than TRL's group-normalised rewards:
    ``per="leaf"`` trains every token of a completion on the leaf's aggregated tree advantage (B,);
    ``per="segment"`` gives each token its segment's advantage (B, T), from
    :func:`~search.treepo.segment_advantages`. The advantages used at the last generation are kept on
    ``tree_advantages``."""
    import torch
    from trl import GRPOTrainer

    rollout = kwargs.get("rollout_func")
    if not isinstance(rollout, TreeRollout):
        raise ReasonError("rollout_func", "must be a TreeRollout", "pass rollout_func=TreeRollout(...)")
    if per not in ("leaf", "segment"):
        raise ReasonError("per", f"unknown advantage granularity {per!r}", "use 'leaf' or 'segment'")

    class TreeGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            records = rollout.last_records
            like = out["advantages"]
            if len(records) != len(like):
                raise RuntimeError("tree records do not match the generated batch")
            if per == "leaf":
                adv = torch.tensor([r.advantage for r in records], dtype=like.dtype, device=like.device)
            else:
                width = out["completion_ids"].shape[1]
                adv = torch.zeros(len(records), width, dtype=like.dtype, device=like.device)
                for row, record in enumerate(records):
                    values = record.token_advantages("segment")[:width]
                    adv[row, : len(values)] = torch.tensor(values, dtype=like.dtype)
            self.tree_advantages = adv
            out["advantages"] = adv
            return out

    return TreeGRPOTrainer(**kwargs)
