"""The multi-token, tree-masked decode step equals separate decodes (the path drafting will use)."""

from __future__ import annotations

import pytest
import torch

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.batch import Row
from reason.core.tiny import build_model


def cached_prompt(engine):
    tree = engine.new_tree("Problem: Find x if 3x + 5 = 20.\nStep 1:")
    engine.expand(tree, tree.root, 1, Stop(max_tokens=1), Sampling(temperature=0))
    entry = engine.store.peek(tree.root)
    assert entry is not None and entry.complete
    return list(entry.slots)


def logits_of(engine, rows):
    for r in rows:
        r.write_slots = engine.pool.alloc(r.q)
    return engine.logits(engine.runner.forward(rows))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_sibling_tree_row_equals_separate_rows(tokenizer, arch, attn):
    model = build_model(arch, tokenizer, seed=3)
    model.set_attn_implementation(attn)
    engine = HFEngine(model, tokenizer)
    ctx = cached_prompt(engine)
    p = len(ctx)
    k, depth = 4, 3
    g = torch.Generator().manual_seed(0)
    branches = torch.randint(3, len(tokenizer), (k, depth), generator=g).tolist()

    separate = logits_of(
        engine,
        [Row(tokens=b, positions=list(range(p, p + depth)), write_slots=[], ctx=ctx, want=list(range(depth))) for b in branches],
    )

    tokens, parents, positions = [], [], []
    for b in branches:
        start = len(tokens)
        for d, t in enumerate(b):
            tokens.append(t)
            parents.append(-1 if d == 0 else start + d - 1)
            positions.append(p + d)
    tree_row = Row(tokens=tokens, positions=positions, write_slots=[], ctx=ctx, parents=parents, want=list(range(len(tokens))))
    packed = logits_of(engine, [tree_row])
    assert packed.shape == separate.shape
    torch.testing.assert_close(packed, separate, atol=1e-4, rtol=0)

    # Step by step, as the engine decodes packed siblings: one token per branch per forward, each
    # seeing the prefix and only its own branch's earlier tokens.
    own: list[list[int]] = [[] for _ in range(k)]
    stepwise = []
    for d in range(depth):
        extra = [s for slots in own for s in slots]
        allow = torch.zeros(k, len(extra), dtype=torch.bool)
        for j in range(k):
            allow[j, j * d : (j + 1) * d] = True
        row = Row(
            tokens=[b[d] for b in branches],
            positions=[p + d] * k,
            write_slots=[],
            ctx=ctx,
            parents=[-1] * k,
            extra=extra,
            extra_allow=allow,
            want=list(range(k)),
        )
        stepwise.append(logits_of(engine, [row]))
        for j in range(k):
            own[j].append(row.write_slots[j])
    stepwise_t = torch.stack(stepwise, 1).reshape(k * depth, -1)
    torch.testing.assert_close(stepwise_t, separate, atol=1e-4, rtol=0)


def test_mixed_length_rows_in_one_forward(llama, tokenizer):
    """Rows of different lengths padded into one forward give the same logits as alone."""
    engine = HFEngine(llama, tokenizer)
    ctx = cached_prompt(engine)
    p = len(ctx)
    rows_spec = [[5, 6, 7, 8, 9], [10], [11, 12]]
    alone = [logits_of(engine, [Row(t, list(range(p, p + len(t))), [], ctx, want=[len(t) - 1])]) for t in rows_spec]
    together = logits_of(engine, [Row(t, list(range(p, p + len(t))), [], ctx[: p], want=[len(t) - 1]) for t in rows_spec])
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-4, rtol=0)
