"""Engines: the policy model that grows trees (see :mod:`reason.core.engine.base` for the contract)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reason.core.engine.base import Engine, ExpandRequest, Outcome, Sampling, Stop
from reason.core.registry import Registry

backends: Registry[Callable[..., Engine]] = Registry("engine")


@backends.register("hf")
def _hf(model: str, **options: Any) -> Engine:
    from reason.core.engine.hf import HFEngine

    return HFEngine.from_pretrained(model, **options)


@backends.register("openai")
def _openai(model: str, **options: Any) -> Engine:
    from reason.core.engine.openai import OpenAIEngine

    return OpenAIEngine.from_pretrained(model, **options)


@backends.register("vllm")
def _vllm(model: str, **options: Any) -> Engine:
    from reason.core.engine.vllm import VLLMEngine

    return VLLMEngine.from_pretrained(model, **options)


def load_engine(model: str, backend: str = "hf", **options: Any) -> Engine:
    """Build an engine: ``backend`` names the implementation (``hf``, ``openai``, ``vllm``), ``model`` a local
    checkpoint directory or hub id (for ``openai``: whose tokenizer to use), and ``options`` go to the
    backend (dtype, device, cache budget, ...; ``base_url``, ``api_key`` for ``openai``)."""
    return backends.get(backend)(model, **options)


__all__ = ["Engine", "ExpandRequest", "Outcome", "Sampling", "Stop", "backends", "load_engine"]
