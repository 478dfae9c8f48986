"""Shared fixtures: a tiny offline tokenizer and tiny random models of real architectures."""

from __future__ import annotations

import pytest
import torch

from reason.core.tiny import build_model, build_tokenizer

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def models(tokenizer):
    """One tiny random model per architecture, built once per session."""
    return {arch: build_model(arch, tokenizer, seed=1) for arch in ("llama", "qwen2", "mistral", "qwen3")}


@pytest.fixture
def llama(models):
    return models["llama"]
