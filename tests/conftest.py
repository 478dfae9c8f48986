"""Shared fixtures: a tiny offline tokenizer and tiny random models of real architectures."""

from __future__ import annotations

import pytest
import torch

from reason.core.engine.hf import HFEngine
from reason.core.tiny import build_model, build_tokenizer
from tasks.arith.problems import generate
from tasks.registry import resolve_model

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


@pytest.fixture(scope="module")
def engine():
    """The bundled arith policy on CPU, one per test module (modules never share its cache or ledger)."""
    return HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def problems():
    """16 held-out level-3 arith problems (seed 11)."""
    return generate(3, 16, seed=11)
