"""Prefix reuse, eviction and batch independence on a branching workload."""

from __future__ import annotations

import copy

import pytest

from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.nocache import NoPrefixCacheEngine
from reason.core.errors import ReasonError

PROMPTS = [f"Problem {i}: what is {i} * {i + 3}? Think step by step.\nStep 1:" for i in range(8)]
STOP = Stop(strings=("\n",), max_tokens=6)


def grow(engine: HFEngine, prompts=PROMPTS[:4], width=3, depth=3, one_at_a_time=False):
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


@pytest.fixture(scope="module")
def llama64(models):
    """The tiny Llama in float64. Evicted paths are recomputed in batches of another shape than
    the first time, which moves float32 logits by rounding; over thousands of sampled tokens that
    can flip a draw that sits on a boundary of the inverse CDF, depending on the CPU's kernels.
    In float64 the rounding is far below any boundary, so token identity is a sound check."""
    return copy.deepcopy(models["llama"]).double()


@pytest.fixture(scope="module")
def ample(llama64, tokenizer):
    """The issue's workload: 8 prompts, every node given 4 children, to depth 4, with ample cache."""
    engine = HFEngine(llama64, tokenizer)
    return engine, grow(engine, PROMPTS, width=4, depth=4)


def test_ample_cache_prefills_only_prompts(ample):
    engine, trees = ample
    for t in trees:
        assert len(t) == 1 + 4 + 16 + 64 + 256
        assert t.ledger.prefill_tokens == t.ledger.prompt_tokens
        assert t.ledger.generated_tokens == t.ledger.unique_tree_tokens - t.ledger.prompt_tokens
    assert engine.ledger.prefill_tokens == sum(t.ledger.prompt_tokens for t in trees)
    assert engine.store.evicted_tokens == 0 and engine.preemptions == 0


def pool_bytes(engine: HFEngine) -> int:
    """Bytes the engine's KV pool tensors hold right now."""
    return sum(t.numel() * t.element_size() for t in engine.pool.keys + engine.pool.values)


class Watched(HFEngine):
    """The hf engine, noting the most bytes its KV pool held after any step."""

    peak_bytes = 0

    def step(self):
        out = super().step()
        self.peak_bytes = max(self.peak_bytes, pool_bytes(self))
        return out


@pytest.fixture(scope="module")
def reference(models, tokenizer):
    """The default workload (4 prompts, width 3, depth 3) grown by a batched, unbounded engine."""
    return snapshot(grow(HFEngine(models["llama"], tokenizer)))


def test_small_cache_evicts_recomputes_and_matches(ample, llama64, tokenizer):
    """A ``cache_bytes`` budget far below what the workload's trees take caps the pool's memory:
    least recently used subtrees are evicted and recomputed, and the tokens do not change."""
    unbounded, reference = ample
    bytes_per = unbounded.pool.bytes_per_slot()
    budget = 1500 * bytes_per + bytes_per // 2  # not a whole number of slots: rounds down
    small = Watched(llama64, tokenizer, cache_bytes=budget)
    trees = grow(small, PROMPTS, width=4, depth=4)
    assert snapshot(trees) == snapshot(reference)
    assert small.store.evicted_tokens > 0
    extra = sum(t.ledger.prefill_tokens - t.ledger.prompt_tokens for t in trees)
    assert extra > 0
    assert small.ledger.prefill_tokens == sum(t.ledger.prefill_tokens for t in trees)
    # The pool's tensors, its padding slot included, never held more than the budget.
    assert small.pool.limit <= 1499
    assert 0 < small.peak_bytes <= budget


def test_cache_bytes_counts_the_padding_slot(llama, tokenizer):
    bytes_per = HFEngine(llama, tokenizer).pool.bytes_per_slot()
    engine = HFEngine(llama, tokenizer, cache_bytes=100 * bytes_per)
    engine.pool.alloc(engine.pool.n_free)  # everything the budget allows
    assert pool_bytes(engine) <= 100 * bytes_per


def test_tight_cache_preempts_and_still_matches(reference, llama, tokenizer):
    tight = HFEngine(llama, tokenizer, cache_tokens=90)
    trees = grow(tight)
    assert snapshot(trees) == reference
    assert tight.preemptions > 0


def test_budget_in_bytes(llama, tokenizer):
    bytes_per = HFEngine(llama, tokenizer).pool.bytes_per_slot()
    engine = HFEngine(llama, tokenizer, cache_bytes=101 * bytes_per)  # 100 slots and the padding slot
    assert engine.pool.limit == 100
    with pytest.raises(ReasonError, match="^cache_bytes:"):
        HFEngine(llama, tokenizer, cache_bytes=bytes_per)


def test_prune_and_release_free_kv(llama, tokenizer):
    engine = HFEngine(llama, tokenizer)
    [tree] = grow(engine, PROMPTS[:1], width=2, depth=2)
    used = engine.pool.n_used
    child = tree.root.children[0]
    held = sum(len(engine.store.peek(n).slots) for n in tree if n in (child, *child.children) and engine.store.peek(n))
    tree.prune(child)
    assert engine.pool.n_used == used - held > 0
    engine.release(tree)
    assert engine.pool.n_used == 0


def test_batched_equals_one_at_a_time(reference, llama, tokenizer):
    single = grow(HFEngine(llama, tokenizer), one_at_a_time=True)
    assert snapshot(single) == reference


def test_running_cap_and_packed_siblings_do_not_change_tokens(reference, llama, tokenizer):
    capped = grow(HFEngine(llama, tokenizer, max_running=2))
    packed = grow(HFEngine(llama, tokenizer, pack_siblings=True))
    assert snapshot(capped) == reference
    assert snapshot(packed) == reference


def test_no_prefix_cache_refills_paths(reference, llama, tokenizer):
    engine = NoPrefixCacheEngine(llama, tokenizer)
    trees = grow(engine)
    assert snapshot(trees) == reference
    for t in trees:
        expanded = [n for n in t if n.children]
        # Every expansion prefills its whole path; a node's own last token was never fed before.
        expected = sum(len(t.prefix_ids(n)) for n in expanded) - sum(1 for n in expanded if n.parent is not None)
        assert t.ledger.prefill_tokens == expected
    assert engine.pool.n_used == 0
