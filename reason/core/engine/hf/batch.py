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

import itertools
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


def own_slots_as_extra(row: Row, slots: list[list[int]], queries: list[int]) -> None:
    """Give a row packing several sequences each one's own earlier ``slots`` as extra keys, seen
    only by that sequence's ``queries`` (consecutive query counts, in the same order)."""
    extra = [x for own in slots for x in own]
    allow = torch.zeros(sum(queries), len(extra), dtype=torch.bool)
    q_at = k_at = 0
    for own, n in zip(slots, queries):
        allow[q_at : q_at + n, k_at : k_at + len(own)] = True
        q_at += n
        k_at += len(own)
    row.extra = extra
    row.extra_allow = allow


def pack_rows(ctx: list[int], rows: list[Row], slots: list[list[int]]) -> Row:
    """One tree-masked row feeding several sibling sequences' rows (each its newest token and its
    draft tree) after their shared path ``ctx``, each sequence also seeing its own earlier
    ``slots``: the path is gathered once for all of them, and the row is as long as their rows
    together rather than each padded to the longest. Queries keep the rows' order."""
    tokens: list[int] = []
    positions: list[int] = []
    parents: list[int] = []
    for r in rows:
        at = len(tokens)
        tokens.extend(r.tokens)
        positions.extend(r.positions)
        parents.extend(range(at - 1, at + r.q - 1) if r.parents is None else (p if p < 0 else p + at for p in r.parents))
        if r.parents is None:
            parents[at] = -1
    packed = Row(tokens=tokens, positions=positions, write_slots=[], ctx=ctx, parents=parents,
                 want=list(range(len(tokens))))
    own_slots_as_extra(packed, slots, [r.q for r in rows])
    return packed


@dataclass
class Batch:
    """The tensors of one forward and where each wanted hidden state lands.

    ``gather`` holds flat indices into the ``[batch * queries]`` hidden states, in row order; None
    when every row has one query and wants it (the hidden states are then the rows, in order).
    ``span`` is the first slot of a one-row batch whose keys are consecutive slots (see
    :class:`~reason.core.engine.hf.kv.PoolCache`), else None."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    write_idx: torch.Tensor
    read_idx: torch.Tensor
    gather: torch.Tensor | None
    span: int | None = None

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
    # itself for small decode batches. Rows of one query each (plain decoding) take a vectorised
    # path with a fixed number of array operations whatever the batch size.
    b = len(rows)
    q_max = max(r.q for r in rows)
    c_max = max(len(r.ctx) for r in rows)
    e_max = max(len(r.extra) for r in rows)
    k_len = c_max + e_max + q_max
    new = c_max + e_max  # first key column of the rows' own new tokens
    ints = np.empty((3, b, q_max), dtype=np.int64)  # input ids, positions, write slots
    read_idx = np.full((b, k_len), TRASH_SLOT, dtype=np.int64)
    if q_max == 1 and e_max == 0:
        allow, gather = _single_queries(rows, ints, read_idx, c_max)
    else:
        allow, gather = _general(rows, ints, read_idx, q_max, c_max, new)
    blocked = torch.from_numpy(~allow).view(b, 1, q_max, k_len)
    mask = torch.zeros(b, 1, q_max, k_len, dtype=dtype).masked_fill_(blocked, torch.finfo(dtype).min)
    ints_t = torch.from_numpy(ints).to(device)
    return Batch(
        input_ids=ints_t[0],
        position_ids=ints_t[1],
        mask=mask.to(device),
        write_idx=ints_t[2],
        read_idx=torch.from_numpy(read_idx).to(device),
        gather=None if gather is None else torch.from_numpy(gather).to(device),
        span=_consecutive_start(read_idx),
    )


def _consecutive_start(read_idx: np.ndarray) -> int | None:
    """The first slot when ``read_idx`` is one row of consecutive slots, else None."""
    if read_idx.shape[0] != 1:
        return None
    row = read_idx[0]
    first = int(row[0])
    if first == TRASH_SLOT or int(row[-1]) - first != len(row) - 1 or not bool((np.diff(row) == 1).all()):
        return None
    return first


def _single_queries(rows: list[Row], ints: np.ndarray, read_idx: np.ndarray, c_max: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of one query each: its context, then its own new key in column ``c_max``."""
    b = len(rows)
    ints[:, :, 0] = np.array([(r.tokens[0], r.positions[0], r.write_slots[0]) for r in rows], dtype=np.int64).T
    lens = np.fromiter((len(r.ctx) for r in rows), dtype=np.int64, count=b)
    total = int(lens.sum())
    if b <= 4:  # a few rows: one slice write each is cheaper than the index arithmetic below
        for i, r in enumerate(rows):
            read_idx[i, : len(r.ctx)] = r.ctx
    elif total:
        flat = np.fromiter(itertools.chain.from_iterable(r.ctx for r in rows), dtype=np.int64, count=total)
        row_of = np.repeat(np.arange(b), lens)
        col_of = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        read_idx[row_of, col_of] = flat
    read_idx[:, c_max] = ints[2, :, 0]
    cols = np.arange(c_max + 1)
    allow = (cols[None, :] < lens[:, None]) | (cols[None, :] == c_max)
    wants_all = all(r.want == [0] for r in rows)
    gather = None if wants_all else np.array([i for i, r in enumerate(rows) for _ in r.want], dtype=np.int64)
    return allow, gather


def _general(rows: list[Row], ints: np.ndarray, read_idx: np.ndarray, q_max: int, c_max: int,
             new: int) -> tuple[np.ndarray, np.ndarray]:
    """Any rows: right-aligned queries, ``[ctx | extra | new]`` keys (see the module docstring)."""
    b = len(rows)
    k_len = read_idx.shape[1]
    ints[0] = 0
    ints[1] = 0
    ints[2] = TRASH_SLOT
    allow = np.zeros((b, q_max, k_len), dtype=np.bool_)
    # Padding queries see only their own (trash) key, so no softmax row is empty.
    diag = np.arange(q_max)
    allow[:, diag, new + diag] = True
    gather: list[int] = []
    chain = np.tril(np.ones((q_max, q_max), dtype=np.bool_))
    for i, r in enumerate(rows):
        off = q_max - r.q
        ints[0, i, off:] = r.tokens
        ints[1, i, off:] = r.positions
        ints[2, i, off:] = r.write_slots
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
        base = i * q_max + off
        gather.extend(base + w for w in r.want)
    return allow, np.array(gather, dtype=np.int64)
