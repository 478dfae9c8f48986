"""Prefix reuse, eviction and batch independence on a branching workload."""

from __future__ import annotations

from reason.engine.base import ExpandRequest, Sampling, Stop
from reason.engine.hf import HFEngine

PROMPTS = [f"Problem {i}: what is {i} * {i + 3}? Think step by step.\nStep 1:" for i in range(4)]
STOP = Stop(strings=("\n",), max_tokens=6)


def grow(engine: HFEngine, prompts=PROMPTS, width=3, depth=3, one_at_a_time=False):
    """Give every node `width` children, level by level, to `depth`; returns the trees."""
    trees = [engine.new_tree(p) for p in prompts]
    frontier = [(t, t.root) for t in trees]
    index = {t: i for i, t in enumerate(trees)}
    for level in range(depth):
        requests = [
            ExpandRequest(t, n, width, STOP, Sampling(temperature=1.0, seed=1000 * index[t] + n.id))
            for t, n in frontier
        ]
        if one_at_a_time:
            results = [engine.expand_many([r])[0] for r in requests]
        else:
            results = engine.expand_many(requests)
        frontier = [(r.tree, c) for r, kids in zip(requests, results) for c in kids]
    return trees


def snapshot(trees):
    return [[(n.id, n.parent.id if n.parent else None, tuple(n.token_ids)) for n in t] for t in trees]


def test_ample_cache_prefills_only_prompts(llama, tokenizer):
    engine = HFEngine(llama, tokenizer)
    trees = grow(engine)
    for t in trees:
        assert len(t) == 1 + 3 + 9 + 27
        assert t.ledger.prefill_tokens == t.ledger.prompt_tokens
        assert t.ledger.generated_tokens == t.ledger.unique_tree_tokens - t.ledger.prompt_tokens
    assert engine.ledger.prefill_tokens == sum(t.ledger.prompt_tokens for t in trees)
    assert engine.store.evicted_tokens == 0


def test_small_cache_evicts_recomputes_and_matches(llama, tokenizer):
    ample = grow(HFEngine(llama, tokenizer))
    small = HFEngine(llama, tokenizer, cache_tokens=160)
    trees = grow(small)
    assert snapshot(trees) == snapshot(ample)
    assert small.store.evicted_tokens > 0
    extra = sum(t.ledger.prefill_tokens - t.ledger.prompt_tokens for t in trees)
    assert extra > 0
    assert small.pool.capacity <= 160


def test_batched_equals_one_at_a_time(llama, tokenizer):
    batched = grow(HFEngine(llama, tokenizer))
    single = grow(HFEngine(llama, tokenizer), one_at_a_time=True)
    assert snapshot(batched) == snapshot(single)


def test_running_cap_and_packed_siblings_do_not_change_tokens(llama, tokenizer):
    ref = grow(HFEngine(llama, tokenizer))
    capped = grow(HFEngine(llama, tokenizer, max_running=2))
    packed = grow(HFEngine(llama, tokenizer, pack_siblings=True))
    assert snapshot(capped) == snapshot(ref)
    assert snapshot(packed) == snapshot(ref)


def test_no_prefix_cache_refills_paths(llama, tokenizer):
    ref = grow(HFEngine(llama, tokenizer))
    engine = HFEngine(llama, tokenizer, prefix_cache=False)
    trees = grow(engine)
    assert snapshot(trees) == snapshot(ref)
    assert all(t.ledger.prefill_tokens > 3 * t.ledger.prompt_tokens for t in trees)
