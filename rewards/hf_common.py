"""Pieces every transformers-based scorer shares: loading, step-tag ids, left truncation, padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reason.core.engine.hf.loader import LOAD_ERRORS, checkpoint_name, load_error_text, resolve_device, resolve_dtype
from reason.core.errors import ReasonError


def load_tokenizer(name: str, *, field: str = "prm", trust_remote_code: bool = False):
    """The tokenizer of checkpoint ``name`` (local directory or hub id)."""
    from transformers import AutoTokenizer

    ckpt = checkpoint_name(name, field)
    try:
        return AutoTokenizer.from_pretrained(ckpt, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as exc:
        raise ReasonError(field, f"cannot load the tokenizer of {name[:200]!r} ({load_error_text(exc)})",
                          "give a checkpoint directory or hub id") from None


def load_pretrained(auto_class: Any, name: str, *, field: str = "prm", dtype: Any = "auto", device: Any = None,
                    trust_remote_code: bool = False, **kwargs: Any):
    """``auto_class.from_pretrained(name)`` moved to ``device`` in eval mode, with one-line errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ckpt = checkpoint_name(name, field)
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)  # an unusable device fails before the weights load
    try:
        model = auto_class.from_pretrained(
            ckpt, dtype=torch_dtype if torch_dtype is not None else "auto", trust_remote_code=trust_remote_code, **kwargs
        )
    except LOAD_ERRORS as exc:
        raise ReasonError(field, f"cannot load {name[:200]!r} ({load_error_text(exc)})", "give a checkpoint directory or hub id") from None
    return model.to(dev).eval()


def single_token_id(tokenizer: Any, text: str, field: str) -> int:
    """The id of ``text`` as one token of ``tokenizer`` (a step tag, "+", "-"), never hard-coded.
    A tag the tokenizer splits or lacks is a one-line error naming ``field``."""
    vocab = tokenizer.get_vocab()
    if text in vocab:
        return int(vocab[text])
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1:
        return int(ids[0])
    # Tokenizers that mark a leading space (sentencepiece "▁", byte-level "Ġ") may hold the tag only
    # in that form; the last piece is what the model sees after a space.
    spaced = tokenizer.encode(" " + text, add_special_tokens=False)
    if len(spaced) >= 1 and tokenizer.decode(spaced[-1:]).strip() == text:
        return int(spaced[-1])
    raise ReasonError(field, f"the tokenizer has no single token for {text!r}", "use the PRM's own tokenizer or set the tag")


def left_truncate(ids: list[int], max_len: int | None) -> list[int]:
    """Keep the last ``max_len`` ids (scores sit at the end; the question's start is what goes)."""
    if max_len is None or len(ids) <= max_len:
        return ids
    return ids[len(ids) - max_len :]


def length_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of items grouped for padded forwards: longest first, each group's padded size
    (its longest item times its count) at most ``max_tokens`` (a longer item goes alone), so many
    short items share one forward and long ones do not blow up memory."""
    if max_tokens < 1:
        raise ReasonError("batch_tokens", f"must be at least 1 (got {max_tokens})", "use e.g. 16384")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (right padding keeps every position's index,
    so a score never moves with the batch's longest item)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_id_of(tokenizer: Any) -> int:
    """A padding id (the pad token, else EOS, else 0)."""
    for tok_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    return 0
