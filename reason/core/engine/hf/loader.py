"""Loading a causal LM and its tokenizer from a local directory or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from reason.core.errors import ReasonError

_DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a name (``float32``, ``bf16``, ``auto``, ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ReasonError("dtype", f"unknown dtype {dtype!r}", f"use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device; ``None``/``"auto"`` picks CUDA when present."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ReasonError("device", f"unknown device {device!r}", "use cpu, cuda, cuda:N or auto") from None


def _looks_local(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else (or anything that exists on disk) is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def checkpoint_name(model: str | os.PathLike, field: str = "model") -> str:
    """The name to hand to ``from_pretrained``: a checked local directory, or a hub id as given.
    A path that does not exist, or lacks ``config.json``, is a one-line error naming ``field``."""
    name = str(model)
    if not name:
        raise ReasonError(field, "is empty", "give a checkpoint directory or a hub id")
    path = Path(name).expanduser()
    if _looks_local(name):
        if not path.exists():
            raise ReasonError(field, f"no such path {name!r}", "give an existing checkpoint directory or a hub id")
        if not (path / "config.json").exists():
            raise ReasonError(field, f"{name!r} has no config.json", "point at a transformers checkpoint directory")
        return str(path)
    return name


def load_model_and_tokenizer(
    model: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)``: a local checkpoint directory, or a hub id (online, or from the
    local HF cache). Tree attention needs ``sdpa`` or ``eager`` attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if attn_implementation not in ("sdpa", "eager"):
        raise ReasonError(
            "attn_implementation",
            f"{attn_implementation!r} cannot take the tree-shaped 4-D masks the engine uses",
            "use sdpa or eager",
        )
    name = checkpoint_name(model)
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=torch_dtype if torch_dtype is not None else "auto",
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReasonError(
            "model", f"cannot load {str(model)!r} ({first})", "give a local checkpoint directory or a reachable hub id"
        ) from None
    lm.to(dev)
    lm.eval()
    return lm, tokenizer
