"""PRMs run by vLLM's pooling runner: this side formats items and reads step scores, vLLM runs the model.

vLLM serves a process reward model such as Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``) under
the ``token_classify`` pooling task: offline through ``LLM.encode(prompts,
pooling_task="token_classify")`` (``LLM.reward`` in the releases that have it), online through
``POST /pooling`` with ``{"model", "input": token ids, "task": "token_classify", "use_activation":
true}``, answered with ``{"data": [{"index", "data": rows}], "usage": {"prompt_tokens"}}``.

An input's rows are either one per step tag (STEP pooling, vLLM's default for the Qwen PRM) or one
per token (ALL pooling); :func:`step_scores` takes either, using the tag positions this side
computed. A row holds the label probabilities (``use_activation``) or, from a server that left the
activation off, logits, which are softmaxed here. The item format is the in-process adapter's
(:class:`~rewards.prm.qwen.QwenMathPRM` built without a model), so the same steps give the same
token ids, truncation and tag positions either way.

Written against vLLM's documented API for the releases in the ``vllm`` extra; vLLM needs a GPU and
is not installed where this project's tests run, so the in-process path (:func:`vllm_pool`) is
untested here; the HTTP path is tested against a stand-in server that answers in vLLM's shape.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from reason.core.errors import ReasonError
from rewards.base import ProcessRewardModel, StepScores
from rewards.hf_common import load_tokenizer

POOLING_FORMATS = {"qwen": ("rewards.prm.qwen", "QwenMathPRM", 1)}
"""PRM names vLLM's ``token_classify`` pooling serves: the adapter that formats items, and the label
whose probability is a step's score."""

VLLM_PRM_SHARE = 0.3
"""The GPU memory share of an in-process vLLM PRM (``gpu_memory_utilization``); a vLLM policy beside
it takes 0.9 minus this (``reason.cli.options.build_engine`` does that)."""

Pool = Callable[[list[list[int]]], list[Any]]
"""Token ids of many inputs -> each input's pooled rows (nested lists of floats)."""


def formatter(name: str, tokenizer: str | Any, **options: Any) -> Any:
    """The in-process adapter of PRM ``name`` without a model: it formats items (``tokenizer``: a
    loaded tokenizer, or a path or hub id to load one from)."""
    if name not in POOLING_FORMATS:
        raise ReasonError("prm", f"{name!r} is not a PRM vLLM's token_classify pooling serves",
                          f"use one of: {', '.join(sorted(POOLING_FORMATS))}")
    module, cls, _ = POOLING_FORMATS[name]
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    return getattr(importlib.import_module(module), cls)(None, tok, **options)


def row_probability(row: Any, label: int) -> float:
    """The probability of ``label`` in one pooled row (probabilities, or logits softmaxed here; a
    single value is a probability if in [0, 1], else a logit)."""
    values = [float(x) for x in row] if isinstance(row, (list, tuple)) else [float(row)]
    if len(values) == 1:
        v = values[0]
        return v if 0.0 <= v <= 1.0 else 1.0 / (1.0 + math.exp(-v))
    if not 0 <= label < len(values):
        raise ReasonError("prm", f"a pooled row has {len(values)} labels, none at index {label}", "serve a two-label PRM")
    if all(0.0 <= v <= 1.0 for v in values) and abs(sum(values) - 1.0) < 1e-3:
        return values[label]
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return exps[label] / sum(exps)


def step_scores(rows: Sequence[Any], n_tokens: int, positions: Sequence[int], label: int) -> list[float]:
    """One input's step scores from its pooled rows: one row per step tag, or one per token (read at
    ``positions``)."""
    if len(rows) == len(positions):
        picked = list(rows)
    elif len(rows) == n_tokens:
        picked = [rows[p] for p in positions]
    else:
        raise ReasonError("prm", f"the pooling output has {len(rows)} rows for {n_tokens} tokens and "
                          f"{len(positions)} steps", "serve the PRM with token_classify pooling (STEP or ALL)")
    return [row_probability(r, label) for r in picked]


class PoolingPRM(ProcessRewardModel):
    """A PRM whose model vLLM runs (see the module docstring): items are formatted by ``formatter``,
    sent as token ids through ``pool``, and their step rows read back.

    ``batch_items`` bounds the inputs of one ``pool`` call; ``calls`` counts those calls. ``gpu_share``
    is the GPU memory share it holds in this process (0 when vLLM runs elsewhere)."""

    incremental = True
    gpu_share = 0.0

    def __init__(self, name: str, formatter: Any, pool: Pool, *, batch_items: int = 256) -> None:
        if name not in POOLING_FORMATS:
            raise ReasonError("prm", f"{name!r} is not a PRM vLLM's token_classify pooling serves",
                              f"use one of: {', '.join(sorted(POOLING_FORMATS))}")
        self.name = name
        self.label = POOLING_FORMATS[name][2]
        self.formatter = formatter
        self.pool = pool
        self.batch_items = batch_items
        self.calls = 0

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> StepScores:
        prepared = [self.formatter.prepare(q, steps) for q, steps in items]
        out: list[list[float]] = []
        for start in range(0, len(prepared), self.batch_items):
            chunk = prepared[start:start + self.batch_items]
            rows = self.pool([ids for ids, _ in chunk])
            self.calls += 1
            if len(rows) != len(chunk):
                raise ReasonError("prm", f"the pooling call answered {len(rows)} of {len(chunk)} inputs", "check the server")
            out += [step_scores(r, len(ids), pos, self.label) for r, (ids, pos) in zip(rows, chunk)]
        return StepScores(out, sum(len(ids) for ids, _ in prepared))


def vllm_pool(llm: Any) -> Pool:
    """``pool`` through an in-process ``vllm.LLM`` built with ``runner="pooling"``: one
    ``LLM.encode(..., pooling_task="token_classify")`` call per batch (``LLM.reward`` where
    ``encode`` takes no ``pooling_task``)."""

    def pool(batch: list[list[int]]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in batch]
        try:
            outputs = llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
        except TypeError:  # a release whose encode has no pooling_task
            outputs = llm.reward(prompts, use_tqdm=False)
        return [_rows(o.outputs.data) for o in outputs]

    return pool


def _rows(data: Any) -> list[Any]:
    return data.tolist() if hasattr(data, "tolist") else list(data)


def load_vllm_prm(name: str, checkpoint: str, *, dtype: str = "auto", gpu_memory_utilization: float = VLLM_PRM_SHARE,
                  batch_items: int = 256, **llm_options: Any) -> PoolingPRM:
    """PRM ``name`` from ``checkpoint`` on an in-process ``vllm.LLM(runner="pooling")`` (for
    ``--engine vllm``; the policy's own ``LLM`` shares the GPU, hence the small memory share, which
    the policy's engine leaves free when built beside it)."""
    try:
        import vllm
    except ImportError:
        raise ReasonError("engine", "vllm is not installed", "pip install 'reason[vllm]' on a GPU machine, or use --engine hf") from None
    fmt = formatter(name, checkpoint)
    llm = vllm.LLM(model=checkpoint, runner="pooling", dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                   **llm_options)
    prm = PoolingPRM(name, fmt, vllm_pool(llm), batch_items=batch_items)
    prm.gpu_share = gpu_memory_utilization
    return prm
