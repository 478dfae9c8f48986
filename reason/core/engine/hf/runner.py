"""The model side of the hf engine: planned rows in, hidden states, logits and sampled tokens out.

:class:`ModelRunner` groups a step's rows into forwards (long prefill rows apart from short decode
rows, prefill rows packed up to a token budget), packs each group with
:func:`~reason.core.engine.hf.batch.build_batch`, runs the base model over the shared KV pool
(:class:`~reason.core.engine.hf.kv.PoolCache`), turns hidden states into logits (with the model's
logit scale and soft-capping) and chooses tokens with :func:`~reason.core.engine.hf.sampler.sample_tokens`,
each from its sequence's own uniform stream, with the model's own logprob and the sampling
distribution's of each. :func:`new_pool` sizes the KV pool for a model.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch

from reason.core.engine.base import Sampling
from reason.core.engine.hf.batch import Row, build_batch
from reason.core.engine.hf.kv import KVPool, PoolCache
from reason.core.engine.hf.penalties import needs_history, process
from reason.core.engine.hf.sampler import Chosen, sample_tokens
from reason.core.engine.hf.scheduler import Plan, Seq
from reason.core.errors import ReasonError
from reason.core.ledger import Ledger
from reason.core.seeding import uniform

_sampling_of = operator.attrgetter("sampling")


def text_config(model: Any) -> Any:
    """The config of the model's text decoder (the model's own config for a plain causal LM)."""
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def new_pool(model: Any, cache_tokens: int | None, cache_bytes: int | None) -> KVPool:
    """A KV pool for ``model`` within ``cache_tokens`` slots or ``cache_bytes`` bytes (at most one
    given; neither: unbounded)."""
    cfg = text_config(model)
    param = next(model.parameters())
    n_layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    bytes_per = 2 * n_layers * kv_heads * head_dim * torch.empty((), dtype=param.dtype).element_size()
    if cache_bytes is not None:
        cache_tokens = cache_bytes // bytes_per - 1  # the pool keeps one padding slot beyond its slots
        if cache_tokens < 1:
            raise ReasonError("cache_bytes", f"{cache_bytes} bytes hold no token's KV beside the padding slot "
                              f"({bytes_per} bytes a token)", f"give at least {2 * bytes_per}")
    if cache_tokens is not None and cache_tokens < 1:
        raise ReasonError("cache_tokens", f"must be at least 1 (got {cache_tokens})", "raise the budget")
    return KVPool(n_layers, kv_heads, head_dim, param.dtype, param.device, cache_tokens)


class ModelRunner:
    """Forwards of planned rows over the KV pool, logits, and token choice.

    Parameters:
        model: a loaded causal LM (sdpa or eager attention).
        pool: the KV pool the forwards read and write.
        ledger: the engine's ledger (forwards and generated tokens are counted).
        prefill_tokens_per_forward: bound on padded tokens of one prefill forward.
    """

    PREFILL_ROW_TOKENS = 16  # rows longer than this go in prefill forwards

    def __init__(self, model: Any, pool: KVPool, ledger: Ledger, prefill_tokens_per_forward: int = 8192) -> None:
        self.model = model
        self.pool = pool
        self.ledger = ledger
        self.prefill_budget = prefill_tokens_per_forward
        self.base = getattr(model, model.base_model_prefix)
        # transformers renamed the forward's cache argument (past_key_values -> cache, the old name
        # deprecated since 5.2x and due to go in 5.40): pass whichever this model's forward takes.
        params = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.head = model.get_output_embeddings()
        self.config = text_config(model)
        self.device = pool.device
        self.dtype = pool.dtype
        self._softcap = getattr(self.config, "final_logit_softcapping", None)
        self._logit_scale = getattr(self.config, "logit_scale", None)

    @property
    def vocab_size(self) -> int:
        """Rows of the output embedding (the ids the model can produce)."""
        return self.head.weight.shape[0]

    def split(self, plans: list[Plan]) -> tuple[list[list[Plan]], list[Plan]]:
        """Group ``plans`` into forwards: prefill groups of long plain rows (each within the prefill
        token budget, padded), and one group of the decode rows: short ones and tree-masked ones
        (empty when there are none)."""
        # Tree-masked rows (packed siblings, drafts) are decode work however long they are.
        long_rows = [p for p in plans if p.row.q > self.PREFILL_ROW_TOKENS and p.row.parents is None]
        short_rows = [p for p in plans if p.row.q <= self.PREFILL_ROW_TOKENS or p.row.parents is not None]
        groups: list[list[Plan]] = []
        for p in sorted(long_rows, key=lambda p: p.row.q):
            if groups:
                g = groups[-1]
                # Sorted by q, so this row is the group's longest.
                if p.row.q * (len(g) + 1) <= self.prefill_budget:
                    g.append(p)
                    continue
            groups.append([p])
        return groups, short_rows

    def run(self, plans: list[Plan]) -> torch.Tensor:
        """One forward of ``plans``' rows, counted in the engine's and each tree's ledger; the
        hidden states of every row's wanted queries, in row order."""
        hidden = self.forward([p.row for p in plans])
        self.ledger.forward_passes += 1
        for tree in {p.job.tree for p in plans}:
            tree.ledger.forward_passes += 1
        return hidden

    def forward(self, rows: list[Row]) -> torch.Tensor:
        """One forward of ``rows`` (their ``write_slots`` allocated): the final hidden states of
        every row's ``want`` queries, ``[n, hidden]``, in row order."""
        batch = build_batch(rows, self.dtype, self.device)
        cache = PoolCache(self.pool, batch.write_idx, batch.read_idx, batch.span)
        with torch.inference_mode():
            out = self.base(
                input_ids=batch.input_ids,
                attention_mask=batch.mask,
                position_ids=batch.position_ids,
                use_cache=True,
                **{self._cache_arg: cache},
            )
            hidden = out.last_hidden_state
            flat = hidden.reshape(-1, hidden.shape[-1])
            return flat if batch.gather is None else flat.index_select(0, batch.gather)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (float32) from final hidden states ``[n, hidden]``."""
        with torch.inference_mode():
            logits = self.head(hidden).float()
            if self._logit_scale is not None:
                logits = logits * self._logit_scale
            if self._softcap is not None:
                logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def choose(
        self, logits: torch.Tensor, seqs: list[Seq], ahead: list[int], drafted: list[list[int]] | None = None
    ) -> Chosen:
        """The token each row of ``logits`` gives its sequence at ``ahead`` tokens past its current
        end, with its model and sampling logprobs: drawn with that position's uniform, so a draft
        position gets exactly the token (and logprobs) plain decoding would give it. ``drafted``
        gives each row's draft tokens before its position (needed when a row's sampling has
        penalties: its history includes them). ``logits`` may be overwritten."""
        requests = [s.job.request for s in seqs]
        samplings: list[Sampling] = list(map(_sampling_of, requests))
        # The extensions are looked at once per request (a step has few; C-level dedup), so at
        # their defaults this costs next to nothing per row.
        unique = dict(zip(map(id, requests), requests)).values()
        with torch.inference_mode():
            raw = None
            if any(r.sampling.penalised or r.stop.min_tokens for r in unique):
                if any(needs_history(s, a) for s, a in zip(seqs, ahead)):
                    raw = logits.clone()  # the model's own logprobs are read from the unprocessed logits
                    process(logits, seqs, ahead, drafted)
            return sample_tokens(
                logits,
                [sp.temperature for sp in samplings],
                [sp.top_k for sp in samplings],
                [sp.top_p for sp in samplings],
                [uniform(s.seed, len(s.tokens) + a) for s, a in zip(seqs, ahead)],
                [sp.min_p for sp in samplings] if any(r.sampling.min_p for r in unique) else None,
                raw,
            )

    def sample(self, logits: torch.Tensor, seqs: list[Seq]) -> None:
        """Append to each sequence the next token its row of ``logits`` gives it."""
        chosen = self.choose(logits, seqs, [0] * len(seqs))
        for s, t, lp, slp in zip(seqs, chosen.tokens, chosen.logprobs, chosen.sampling_logprobs):
            s.append(t, lp, slp, self.ledger)
