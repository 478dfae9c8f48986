"""Tiny random checkpoints of real architectures, built offline, for tests, benchmarks and smoke runs.

``build_tokenizer`` trains a small byte-level BPE tokenizer on a built-in math text (multi-character
tokens, so stop strings can fall inside or across tokens) and gives it a ChatML chat template.
``build_model`` makes a randomly initialised Llama / Qwen2 / Mistral / Qwen3 causal LM of a given
size; ``save_tiny_checkpoint`` writes both to a directory that loads like any hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reason.core.errors import ReasonError

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """\
Solve the problem step by step. Put the final answer in \\boxed{}.
Problem: What is 12 + 30 * 2?
Step 1: First compute 30 * 2 = 60.

Step 2: Then 12 + 60 = 72.

The answer is \\boxed{72}.
Problem: Find x if 3x + 5 = 20.
Step 1: Subtract 5 from both sides: 3x = 15.

Step 2: Divide by 3: x = 5.

Therefore the final answer is \\boxed{5}.
Let f(x) = x^2 - 4x + 4. Then f(x) = (x - 2)^2, so the minimum value is 0 at x = 2.
The sum of the interior angles of a polygon with n sides is 180(n - 2) degrees.
A fair die is rolled twice; the probability that the sum is 7 is 6/36 = 1/6.
"""

ARCHITECTURES = ("llama", "qwen2", "mistral", "qwen3")


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<|im_start|>``/``<|im_end|>``/``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def model_config(arch: str, vocab_size: int, **overrides: Any):
    """A small config of architecture ``arch`` (grouped-query attention where the family uses it)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        common.setdefault("sliding_window", None)
        return MistralConfig(**common)
    if arch == "qwen3":
        common.setdefault("head_dim", common["hidden_size"] // common["num_attention_heads"])
        return Qwen3Config(**common)
    raise ReasonError("arch", f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHITECTURES)}")


def build_model(arch: str, tokenizer: Any, seed: int = 0, **overrides: Any):
    """A randomly initialised causal LM of ``arch`` sized for ``tokenizer``, float32, eval mode."""
    from transformers import AutoModelForCausalLM

    cfg = model_config(arch, len(tokenizer), **overrides)
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    cfg.bos_token_id = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def save_tiny_checkpoint(out_dir: str | Path, arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny random ``arch`` checkpoint and its tokenizer to ``out_dir``; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = build_model(arch, tok, seed=seed, **overrides)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
