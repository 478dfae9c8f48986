"""Packing rows of work into one forward: token ids, positions, KV slot indices and the 4-D mask.

A :class:`Row` feeds ``q`` new tokens for one sequence (or one packed group of siblings). Its keys
are laid out as ``[ctx | extra | new]``:

* ``ctx``: cached slots every real query of the row may see (the path to the node being expanded);
* ``extra``: cached slots that only some queries see (``extra_allow[i, j]``), e.g. each sibling's own
  earlier tokens when siblings are decoded as one tree-masked sequence;
* ``new``: the row's own new tokens, whose visibility follows ``parents`` (a token sees itself and its
  ancestors among the new tokens; ``parents=None`` means a plain causal chain).

Queries are right-aligned (padding first) so every row's last token sits at the last position.
The mask is additive float (0 = attend, ``finfo.min`` = blocked), which transformers passes
untouched to sdpa / eager attention; ``position_ids`` are explicit, so siblings and draft-tree nodes
at the same depth share a position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from reason.core.engine.hf.kv import TRASH_SLOT


@dataclass
class Row:
    """One row of a forward (see the module docstring)."""

    tokens: list[int]
    positions: list[int]
    write_slots: list[int]
    ctx: list[int]
    parents: list[int] | None = None
    extra: list[int] = field(default_factory=list)
    extra_allow: torch.Tensor | None = None  # bool [q, len(extra)]
    want: list[int] = field(default_factory=list)  # query indices whose hidden state is needed

    @property
    def q(self) -> int:
        return len(self.tokens)


@dataclass
class Batch:
    """The tensors of one forward and where each wanted hidden state lands."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    write_idx: torch.Tensor
    read_idx: torch.Tensor
    gather_rows: torch.Tensor
    gather_cols: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.numel())


def _ancestors(parents: list[int]) -> np.ndarray:
    q = len(parents)
    anc = np.zeros((q, q), dtype=np.bool_)
    for i, p in enumerate(parents):
        if p >= i:
            raise ValueError("parents must point to earlier tokens")
        if p >= 0:
            anc[i] = anc[p]
        anc[i, i] = True
    return anc


def build_batch(rows: list[Row], dtype: torch.dtype, device: torch.device) -> Batch:
    """Pack ``rows`` into padded tensors for one forward of the model."""
    # Assembled in numpy and converted once: per-row torch slice writes cost more than the model
    # itself for small decode batches.
    b = len(rows)
    q_max = max(r.q for r in rows)
    c_max = max(len(r.ctx) for r in rows)
    e_max = max(len(r.extra) for r in rows)
    k_len = c_max + e_max + q_max
    new = c_max + e_max  # first key column of the rows' own new tokens

    input_ids = np.zeros((b, q_max), dtype=np.int64)
    position_ids = np.zeros((b, q_max), dtype=np.int64)
    write_idx = np.full((b, q_max), TRASH_SLOT, dtype=np.int64)
    read_idx = np.full((b, k_len), TRASH_SLOT, dtype=np.int64)
    allow = np.zeros((b, q_max, k_len), dtype=np.bool_)
    # Padding queries see only their own (trash) key, so no softmax row is empty.
    diag = np.arange(q_max)
    allow[:, diag, new + diag] = True

    gather_rows: list[int] = []
    gather_cols: list[int] = []
    chain = np.tril(np.ones((q_max, q_max), dtype=np.bool_))
    for i, r in enumerate(rows):
        off = q_max - r.q
        input_ids[i, off:] = r.tokens
        position_ids[i, off:] = r.positions
        write_idx[i, off:] = r.write_slots
        n_ctx = len(r.ctx)
        if n_ctx:
            read_idx[i, :n_ctx] = r.ctx
            allow[i, off:, :n_ctx] = True  # every real query sees the whole ctx
        if r.extra:
            read_idx[i, c_max : c_max + len(r.extra)] = r.extra
            allow[i, off:, c_max : c_max + len(r.extra)] = r.extra_allow.numpy()
        read_idx[i, new + off :] = r.write_slots
        anc = chain[: r.q, : r.q] if r.parents is None else _ancestors(r.parents)
        allow[i, off:, new + off :] = anc
        for w in r.want:
            gather_rows.append(i)
            gather_cols.append(off + w)

    mask = torch.zeros(b, 1, q_max, k_len, dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(allow)[:, None], torch.finfo(dtype).min)

    def put(a: np.ndarray | list[int]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64)).to(device)

    return Batch(
        input_ids=put(input_ids),
        position_ids=put(position_ids),
        mask=mask.to(device),
        write_idx=put(write_idx),
        read_idx=put(read_idx),
        gather_rows=put(gather_rows),
        gather_cols=put(gather_cols),
    )
