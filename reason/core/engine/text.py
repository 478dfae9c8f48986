"""Prompts to token ids and back, shared by every backend that tokenizes on this side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reason.core.errors import ReasonError


def tokenize_prompt(tokenizer: Any, prompt: str | Sequence[dict[str, str]] | Sequence[int],
                    vocab_size: int | None = None) -> tuple[list[int], str]:
    """Token ids and text of ``prompt``: a string, chat messages (the chat template is applied) or
    token ids (checked against ``vocab_size`` when given)."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return list(ids), prompt
    items = list(prompt)
    if all(isinstance(t, int) for t in items):
        check_token_ids(items, vocab_size)
        return items, decode(tokenizer, items)
    if all(isinstance(m, dict) and "role" in m and "content" in m for m in items):
        if not getattr(tokenizer, "chat_template", None):
            raise ReasonError("prompt", "chat messages given but the tokenizer has no chat template", "pass plain text")
        text = tokenizer.apply_chat_template(items, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids), text
    raise ReasonError("prompt", "must be text, a list of {role, content} messages or token ids", "fix its type")


def check_token_ids(ids: Sequence[int], vocab_size: int | None, field: str = "prompt") -> None:
    """A one-line error for an id outside ``0..vocab_size-1``."""
    bad = [t for t in ids if t < 0 or (vocab_size is not None and t >= vocab_size)]
    if bad:
        top = f"0..{vocab_size - 1}" if vocab_size is not None else "non-negative"
        raise ReasonError(field, f"token id {bad[0]} is outside the vocabulary ({top})", "check the ids")


def eos_token_ids(*owners: Any) -> set[int]:
    """The end-of-sequence ids the ``owners`` name (tokenizers, generation configs; None is skipped):
    each one's ``eos_token_id``, an id or a list of ids."""
    ids: set[int] = set()
    for owner in owners:
        eos = getattr(owner, "eos_token_id", None)
        if eos is not None:
            ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


def decode(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Text of ``token_ids``, special tokens kept."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=False)
