"""Speculative tree drafting: drafters propose token trees that the engine verifies losslessly."""

from __future__ import annotations

from reason.core.draft.base import Draft, Drafter, DraftQuery
from reason.core.draft.recycle import RecyclingDrafter
from reason.core.draft.spine import SpineDrafter
from reason.core.draft.suffix import SuffixDrafter
from reason.core.errors import ReasonError

DRAFTERS = ("spine", "suffix", "recycle")


def make_drafter(name: str, vocab_size: int) -> Drafter:
    """A drafter by name: ``spine`` (the default: suffix spine + recycled branches), ``suffix`` or
    ``recycle``."""
    if name == "spine":
        return SpineDrafter(vocab_size)
    if name == "suffix":
        return SuffixDrafter()
    if name == "recycle":
        return RecyclingDrafter(vocab_size)
    raise ReasonError("draft", f"unknown drafter {name!r}", f"use one of {', '.join(DRAFTERS)}")


__all__ = ["DRAFTERS", "Draft", "DraftQuery", "Drafter", "RecyclingDrafter", "SpineDrafter", "SuffixDrafter", "make_drafter"]
