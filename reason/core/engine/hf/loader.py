"""Loading a causal LM and its tokenizer from a local directory or a hub id."""

from __future__ import annotations

import json
import os
import pickle
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
    """A torch device; ``None``/``"auto"`` picks CUDA when present. A device this torch cannot use
    (``cuda`` on a CPU-only build or without a visible GPU, ``cuda:N`` past the last GPU, ``mps``
    off Apple silicon) is a one-line error, before any model loads."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ReasonError("device", f"unknown device {str(device)[:40]!r}", "use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ReasonError("device", f"CUDA is not available ({why})", "use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ReasonError("device", f"{device!r} names GPU {dev.index}, but there are {torch.cuda.device_count()}",
                              f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ReasonError("device", "MPS is not available on this machine", "use --device cpu (or auto)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ReasonError("device", f"unsupported device {str(device)[:40]!r}", "use cpu, cuda, cuda:N, mps or auto")
    return dev


MAX_SAFETENSORS_HEADER = 100_000_000
"""Bytes of a safetensors file's JSON header (the safetensors library's own limit): a longer one is
a damaged file, refused without reading it."""


def check_safetensors(file: Path, field: str = "model") -> None:
    """A one-line :class:`ReasonError` naming ``field`` and ``file`` when the safetensors file is
    empty, truncated (shorter than its header says) or has a header that is not one (too long, not
    JSON, offsets out of order); it reads the header only."""
    size = file.stat().st_size
    fix = "re-download or re-save the checkpoint"
    if size < 8:
        raise ReasonError(field, f"{file} is {'empty' if size == 0 else f'truncated ({size} bytes)'}", fix)
    with open(file, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if length > MAX_SAFETENSORS_HEADER:
            raise ReasonError(field, f"{file} has a bad safetensors header (it claims {length} header bytes)", fix)
        if 8 + length > size:
            raise ReasonError(field, f"{file} is truncated ({size} bytes; its header alone needs {8 + length})", fix)
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ReasonError(field, f"{file} has a bad safetensors header (not JSON)", fix) from None
    if not isinstance(header, dict):
        raise ReasonError(field, f"{file} has a bad safetensors header (not a JSON object)", fix)
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ReasonError(field, f"{file} has a bad safetensors header (tensor {str(name)[:40]!r})", fix)
        end = max(end, offsets[1])
    if 8 + length + end > size:
        raise ReasonError(field, f"{file} is truncated ({size} bytes; its header needs {8 + length + end})", fix)


def check_weights(path: Path, field: str = "model") -> None:
    """Check every safetensors file of the checkpoint directory ``path`` (see
    :func:`check_safetensors`) and that a sharded checkpoint's index names only files that exist."""
    for file in sorted(path.glob("*.safetensors")):
        check_safetensors(file, field)
    for index in sorted(path.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_bytes()).get("weight_map", {})
            shards = set(weight_map.values())
        except (ValueError, RecursionError, AttributeError, TypeError):
            raise ReasonError(field, f"{index} is not a safetensors index", "re-download or re-save the checkpoint") from None
        missing = sorted(str(shard) for shard in shards if not (path / str(shard)).is_file())
        if missing:
            raise ReasonError(field, f"{index} names {len(missing)} missing shard(s), e.g. {path / missing[0]}",
                              "re-download or re-save the checkpoint")


def _load_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # safetensors comes with transformers; without it there is nothing to catch
        pass
    return tuple(errors)


LOAD_ERRORS = _load_errors()
"""What ``from_pretrained`` raises for a checkpoint it cannot read (damaged, mismatched weights,
unreachable hub id); the loaders turn these into one-line errors naming the checkpoint."""


def load_error_text(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), at most 200 characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def path_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists; False (not an error) for a name no file system takes (too long, a NUL)."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):
        return False


def _looks_local(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else (or anything that exists on disk) is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or path_exists(name)


def checkpoint_name(model: str | os.PathLike, field: str = "model") -> str:
    """The name to hand to ``from_pretrained``: a checked local directory, or a hub id as given.
    A path that does not exist, lacks ``config.json``, or holds a damaged safetensors file
    (:func:`check_weights`) is a one-line error naming ``field``."""
    name = str(model)
    if not name:
        raise ReasonError(field, "is empty", "give a checkpoint directory or a hub id")
    path = Path(name).expanduser()
    if _looks_local(name):
        if not path_exists(path):
            raise ReasonError(field, f"no such path {name[:200]!r}", "give an existing checkpoint directory or a hub id")
        if not (path / "config.json").is_file():
            raise ReasonError(field, f"{name!r} has no config.json", "point at a transformers checkpoint directory")
        check_weights(path, field)
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
    except LOAD_ERRORS as exc:
        raise ReasonError(
            "model", f"cannot load {str(model)[:200]!r} ({load_error_text(exc)})", "give a local checkpoint directory or a reachable hub id"
        ) from None
    lm.to(dev)
    lm.eval()
    return lm, tokenizer
