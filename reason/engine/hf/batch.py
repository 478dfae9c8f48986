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

from reason.engine.hf.kv import TRASH_SLOT


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


def _ancestors(parents: list[int]) -> torch.Tensor:
    q = len(parents)
    anc = np.zeros((q, q), dtype=np.bool_)  # numpy: row copies are far cheaper than torch's here
    for i, p in enumerate(parents):
        if p >= i:
            raise ValueError("parents must point to earlier tokens")
        if p >= 0:
            anc[i] = anc[p]
        anc[i, i] = True
    return torch.from_numpy(anc)


def build_batch(rows: list[Row], dtype: torch.dtype, device: torch.device) -> Batch:
    """Pack ``rows`` into padded tensors for one forward of the model."""
    b = len(rows)
    q_max = max(r.q for r in rows)
    c_max = max(len(r.ctx) for r in rows)
    e_max = max(len(r.extra) for r in rows)
    k_len = c_max + e_max + q_max

    input_ids = torch.zeros(b, q_max, dtype=torch.long)
    position_ids = torch.zeros(b, q_max, dtype=torch.long)
    write_idx = torch.full((b, q_max), TRASH_SLOT, dtype=torch.long)
    read_idx = torch.full((b, k_len), TRASH_SLOT, dtype=torch.long)
    allow = torch.zeros(b, q_max, k_len, dtype=torch.bool)
    q_lens = torch.tensor([r.q for r in rows])
    c_lens = torch.tensor([len(r.ctx) for r in rows])

    # ctx: every real query sees the first len(ctx) keys.
    real_q = torch.arange(q_max)[None, :] >= (q_max - q_lens)[:, None]  # [b, q_max]
    ctx_ok = torch.arange(c_max)[None, :] < c_lens[:, None]  # [b, c_max]
    allow[:, :, :c_max] = real_q[:, :, None] & ctx_ok[:, None, :]
    # Padding queries see only their own (trash) key, so no softmax row is empty.
    pad_q = ~real_q
    diag = torch.arange(q_max)
    allow[:, diag, c_max + e_max + diag] |= pad_q

    gather_rows: list[int] = []
    gather_cols: list[int] = []
    chain_cache: dict[int, torch.Tensor] = {}
    for i, r in enumerate(rows):
        off = q_max - r.q
        input_ids[i, off:] = torch.tensor(r.tokens, dtype=torch.long)
        position_ids[i, off:] = torch.tensor(r.positions, dtype=torch.long)
        write_idx[i, off:] = torch.tensor(r.write_slots, dtype=torch.long)
        if r.ctx:
            read_idx[i, : len(r.ctx)] = torch.tensor(r.ctx, dtype=torch.long)
        if r.extra:
            read_idx[i, c_max : c_max + len(r.extra)] = torch.tensor(r.extra, dtype=torch.long)
            allow[i, off:, c_max : c_max + len(r.extra)] = r.extra_allow
        read_idx[i, c_max + e_max + off :] = write_idx[i, off:]
        if r.parents is None:
            anc = chain_cache.get(r.q)
            if anc is None:
                anc = chain_cache[r.q] = torch.ones(r.q, r.q, dtype=torch.bool).tril_()
        else:
            anc = _ancestors(r.parents)
        allow[i, off:, c_max + e_max + off :] = anc
        for w in r.want:
            gather_rows.append(i)
            gather_cols.append(off + w)

    mask = torch.zeros(b, 1, q_max, k_len, dtype=dtype)
    mask.masked_fill_(~allow[:, None], torch.finfo(dtype).min)
    return Batch(
        input_ids=input_ids.to(device),
        position_ids=position_ids.to(device),
        mask=mask.to(device),
        write_idx=write_idx.to(device),
        read_idx=read_idx.to(device),
        gather_rows=torch.tensor(gather_rows, dtype=torch.long, device=device),
        gather_cols=torch.tensor(gather_cols, dtype=torch.long, device=device),
    )
