"""Skywork-o1-Open-PRM: a causal-LM backbone with a value head ``Linear(hidden, 1)`` read with a
sigmoid at a step token after each step.

Input: the BOS token (if any), ``question + "\\n"``, then each step's ids followed by the step token
(``"\\n"`` by default). The published checkpoints are not an Auto class: :class:`SkyworkValueHead`
loads the backbone with ``AutoModelForCausalLM`` and the head's ``v_head.summary.*`` tensors from the
checkpoint's safetensors files (the real checkpoint keeps them beside the backbone's weights;
:meth:`SkyworkValueHead.save_pretrained` writes them to ``value_head.safetensors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reason.core.errors import ReasonError
from rewards.hf_common import load_pretrained, load_tokenizer
from rewards.prm.tagged import TaggedPRM

HEAD_FILE = "value_head.safetensors"
HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")


class _Head(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden, 1)


class SkyworkValueHead(nn.Module):
    """Backbone plus value head; ``forward`` returns the head's raw value per token ``[batch, seq]``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.v_head = _Head(backbone.config.hidden_size).to(next(backbone.parameters()).dtype)
        self.config = backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return self.v_head.summary(out.hidden_states[-1]).squeeze(-1)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the backbone as a normal checkpoint and the head to ``value_head.safetensors``."""
        from safetensors.torch import save_file

        self.backbone.save_pretrained(directory)
        head = {"v_head.summary.weight": self.v_head.summary.weight, "v_head.summary.bias": self.v_head.summary.bias}
        save_file({k: v.detach().contiguous() for k, v in head.items()}, str(Path(directory) / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: Any = "auto", device: Any = None) -> SkyworkValueHead:
        """Load the backbone and the head's tensors (local directory or hub id)."""
        from transformers import AutoModelForCausalLM

        backbone = load_pretrained(AutoModelForCausalLM, name, dtype=dtype, device=device)
        model = cls(backbone)
        tensors = _find_head(name)
        with torch.no_grad():
            model.v_head.summary.weight.copy_(tensors[HEAD_KEYS[0]])
            model.v_head.summary.bias.copy_(tensors[HEAD_KEYS[1]])
        return model.to(next(backbone.parameters()).device).eval()


def _find_head(name: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    path = Path(name).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
    else:
        from transformers.utils import cached_file

        files = [Path(f) for f in (cached_file(name, HEAD_FILE, _raise_exceptions_for_missing_entries=False),
                                    cached_file(name, "model.safetensors", _raise_exceptions_for_missing_entries=False)) if f]
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if key in HEAD_KEYS:
                    found[key] = handle.get_tensor(key)
    if set(found) != set(HEAD_KEYS):
        raise ReasonError("prm", f"{name!r} has no value head ({', '.join(HEAD_KEYS)})", "point at a Skywork PRM checkpoint")
    return found


class SkyworkPRM(TaggedPRM):
    """Skywork PRM adapter (options: ``step_token``, ``batch_tokens``, ``max_length``)."""

    name = "skywork"

    def __init__(self, model: nn.Module, tokenizer: Any, *, step_token: str = "\n", batch_tokens: int = 16384,
                 max_length: int | None = 4096) -> None:
        super().__init__(model, tokenizer, batch_tokens=batch_tokens, max_length=max_length)
        ids = tokenizer.encode(step_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ReasonError("step_token", f"{step_token!r} is not one token for this tokenizer", "use the PRM's own tokenizer")
        self.step_id = int(ids[0])

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: Any = "auto", device: Any = None, **options: Any) -> SkyworkPRM:
        """Load by path or hub id."""
        return cls(SkyworkValueHead.from_pretrained(name, dtype=dtype, device=device), load_tokenizer(name), **options)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + list(tok(question + "\n", add_special_tokens=False)["input_ids"])
        positions = []
        for step in steps:
            ids += list(tok(step, add_special_tokens=False)["input_ids"]) + [self.step_id]
            positions.append(len(ids) - 1)
        return ids, positions

    def read(self, output: Any, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output[rows, cols].float())
