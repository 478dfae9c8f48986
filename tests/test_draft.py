"""Speculative tree drafting: the drafters, and token identity with drafting on and off."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from reason.cli import main
from reason.core.draft import (
    Draft,
    Drafter,
    DraftQuery,
    RecyclingDrafter,
    SuffixDrafter,
    make_drafter,
)
from reason.core.draft.base import best_first
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.hf.draft_cost import ForwardCost
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from rewards.catalog import load_prm
from reason.shortcuts import solve_many
from tasks.arith.problems import generate
from tests.test_engine_branching import PROMPTS, snapshot

DRAFTERS = ("spine", "suffix", "recycle")


def tree_snapshot(result):
    return [(n.id, n.parent.id if n.parent else None, tuple(n.token_ids), n.finish_reason) for n in result.tree]


@pytest.fixture(scope="module")
def arith_engines():
    path = resolve_model("arith")
    plain = HFEngine.from_pretrained(path, dtype="float32", device="cpu")
    # draft_threshold=0: drafts sized by acceptance alone (no timing), so every check drafts the same.
    return plain, {d: HFEngine.from_pretrained(path, dtype="float32", device="cpu", draft=d, draft_threshold=0.0)
                   for d in DRAFTERS}


def test_draft_tree_helpers():
    d = Draft()
    a = d.add(5, -1)
    b = d.add(6, a)
    d.add(7, -1)
    d.add(8, b)
    assert d.depths() == [1, 2, 1, 3]
    assert d.children() == {-1: {5: 0, 7: 2}, 0: {6: 1}, 1: {8: 3}}


def test_best_first_shape_and_budget():
    # A confident chain (weight 0.9) with weaker alternatives (0.2) at every node.
    def nxt(tokens):
        last = tokens[-1]
        return [(last + 1, 0.9), (last + 100, 0.2)]

    draft = best_first([0], nxt, 6)
    assert len(draft) == 6
    depths = draft.depths()
    assert max(depths) >= 4  # the spine goes deep before alternatives fill in
    assert draft.tokens[: 4] == [1, 2, 3, 4]
    assert best_first([0], nxt, 6).tokens == draft.tokens  # deterministic


def test_recycled_table_learns_from_logits_and_is_bounded():
    import torch

    r = RecyclingDrafter(151_936, k=8, capacity=64)
    # 4.9 MB for the per-token table of a 150k vocabulary.
    assert r.memory_bytes() < 6_000_000
    logits = torch.zeros(3, 151_936)
    logits[0, 42] = 5.0
    logits[1, 43] = 5.0
    logits[2, 44] = 5.0
    d = Draft()
    d.add(42, -1)
    d.add(43, 0)
    r.observe([([1, 2, 3, 7], d)], logits)
    assert r.row([9, 7])[0] == 42  # unigram row of 7
    assert r.row([1, 2, 3, 7, 42, 43])[0] == 44  # order-3 context row
    grown = r.propose(DraftQuery(None, None, [1, 2, 3, 7], [], key=1), 3)
    assert grown.tokens[:3] == [42, 43, 44]
    for i in range(500):  # many distinct contexts: the context tables stay at capacity
        r.observe([([i, i + 1, i + 2, i + 3], Draft())], logits[:1])
    assert all(len(t) <= 64 for t in r._ctx.values())
    assert r.memory_bytes() < 6_000_000


def test_suffix_drafter_follows_the_tree(arith_engines):
    plain, _ = arith_engines
    tree = plain.new_tree("7*8+1")
    tok = plain.tokenizer
    ids = tok.encode("7*8=56\n56+1=57\n", add_special_tokens=False)
    node = tree.add_child(tree.root, ids[:7], finish_reason="stop")
    tree.add_child(node, ids[7:], finish_reason="stop")
    # A new sequence under the root that has produced "7*8=5": the tree says "6\n56+1=57".
    query = DraftQuery(tree, tree.root, tree.prefix_ids(tree.root), ids[:5], key="s")
    draft = SuffixDrafter().propose(query, 8)
    path, node_i = [], -1
    kids = draft.children()
    while node_i in kids:
        node_i = next(iter(kids[node_i].values()))
        path.append(draft.tokens[node_i])
    assert path == ids[5:13]


def test_unknown_drafter_is_a_one_line_error(arith_engines):
    with pytest.raises(ReasonError, match="draft"):
        make_drafter("nope", 10)
    result = CliRunner().invoke(main, ["generate", "1+2", "--draft", "nope"])
    assert result.exit_code == 2 and "unknown drafter" in result.output


def sixteen_samples(engine, temperature):
    """16 samples (seed 7, at most 48 tokens) of one arith prompt: (tokens, finish) and logprobs."""
    tree = engine.new_tree("((23+20)*5-17)*3")
    [kids] = engine.expand_many([ExpandRequest(tree, tree.root, 16, Stop(max_tokens=48),
                                               Sampling(temperature=temperature, seed=7))])
    return [(tuple(k.token_ids), k.finish_reason) for k in kids], [k.logprobs for k in kids]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_arith_generate_identical_with_every_drafter(arith_engines, temperature):
    plain, drafted = arith_engines
    def run(engine):
        return sixteen_samples(engine, temperature)

    ref, ref_lp = run(plain)
    for name, engine in drafted.items():
        before = engine.ledger.draft_accepted
        got, lp = run(engine)
        assert got == ref, name
        for a, b in zip(lp, ref_lp):
            assert a == pytest.approx(b, abs=1e-4)
        assert engine.ledger.draft_accepted > before, name  # drafting actually happened


class ModelledCost(ForwardCost):
    """The engine's cost fit fed a fixed forward-cost model (1 ms a step plus 20 us a fed token)
    instead of measured seconds, so draft sizes, and what drafting accepts, do not depend on the
    machine's speed or load. Keeps its instances so a test can read the threshold they reached."""

    made: list[ModelledCost] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        ModelledCost.made.append(self)

    def record(self, tokens_fed: int, tokens_yielded: int, seconds: float) -> None:
        super().record(tokens_fed, tokens_yielded, 1e-3 + 2e-5 * tokens_fed)


def test_cli_generate_draft_flag_keeps_the_output(monkeypatch):
    monkeypatch.setattr("reason.core.engine.hf.speculative.ForwardCost", ModelledCost)
    monkeypatch.setattr(ModelledCost, "made", [])
    outs = []
    for flag in (["--no-draft"], ["--draft"], ["--draft", "suffix"]):
        r = CliRunner().invoke(main, ["generate", "12+3*4-5", "-n", "16", "-t", "0.8", "--seed", "3", "--json", *flag])
        assert r.exit_code == 0, r.output
        data = json.loads(r.output)
        outs.append(([s["token_ids"] for s in data["samples"]], data["ledger"]))
    assert outs[0][0] == outs[1][0] == outs[2][0]
    assert outs[0][1]["draft_proposed"] == 0
    assert outs[1][1]["draft_accepted"] > 0 and outs[2][1]["draft_accepted"] > 0
    # The CLI leaves the threshold to the measured cost: here the cost model's, strictly between
    # "draft freely" (0) and "drafting off" (1), the same on every machine.
    # One cost model per drafting engine (the --no-draft engine keeps none).
    assert len(ModelledCost.made) == 2 and all(0 < c.threshold() < 1 for c in ModelledCost.made)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_tiny_models_branching_identical(models, tokenizer, arch, temperature):
    """Branching growth on random tiny models, with a small cache (eviction and recomputation)."""

    def grow_t(engine):
        trees = [engine.new_tree(p) for p in PROMPTS[:3]]
        frontier = [(t, t.root) for t in trees]
        for _ in range(3):
            reqs = [ExpandRequest(t, n, 3, Stop(strings=("\n",), max_tokens=6),
                                  Sampling(temperature=temperature, seed=n.id)) for t, n in frontier]
            frontier = [(r.tree, c) for r, kids in zip(reqs, engine.expand_many(reqs)) for c in kids]
        return trees

    ref = snapshot(grow_t(HFEngine(models[arch], tokenizer)))
    for name in DRAFTERS:
        engine = HFEngine(models[arch], tokenizer, draft=name, cache_tokens=600, draft_threshold=0.0)
        assert snapshot(grow_t(engine)) == ref, name
    assert engine.ledger.draft_proposed > 0
    # Siblings' drafts packed into one tree-masked row per expansion.
    packed = HFEngine(models[arch], tokenizer, draft="spine", cache_tokens=600, draft_threshold=0.0, pack_siblings=True)
    assert snapshot(grow_t(packed)) == ref
    assert packed.ledger.draft_proposed > 0


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_packed_sibling_drafts_identical_in_fewer_rows(arith_engines, temperature):
    """16 samples of one prompt drafted and packed into one row per step: the same tokens and
    logprobs as plain decoding, with drafts accepted."""
    plain, _ = arith_engines
    packed = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu", draft="spine",
                                      draft_threshold=0.0, pack_siblings=True)
    def run(engine):
        return sixteen_samples(engine, temperature)

    ref, ref_lp = run(plain)
    got, lp = run(packed)
    assert got == ref
    for a, b in zip(lp, ref_lp):
        assert a == pytest.approx(b, abs=1e-4)
    assert packed.ledger.draft_accepted > 0
    # One packed row per step instead of 16: far fewer forward rows than tokens generated.
    assert packed.ledger.forward_passes < packed.ledger.generated_tokens / 16


def test_adaptive_size_backs_off_when_drafts_fail(models, tokenizer):
    """A drafter that is always wrong: the engine stops spending verification slots on it."""

    class Wrong(Drafter):
        def propose(self, query, budget):
            d = Draft()
            parent = -1
            for _ in range(budget):
                parent = d.add(0, parent)  # one token over and over: almost never what the model samples
            return d

    def run(engine):
        trees = [engine.new_tree(p) for p in PROMPTS[:4]]
        reqs = [ExpandRequest(t, t.root, 4, Stop(max_tokens=32), Sampling(temperature=1.0, seed=i))
                for i, t in enumerate(trees)]
        return [[tuple(k.token_ids) for k in kids] for kids in engine.expand_many(reqs)]

    # draft_threshold=0: sizes follow acceptance alone, not the measured cost of a forward.
    engine = HFEngine(models["llama"], tokenizer, draft=Wrong(), draft_tokens=16, draft_threshold=0.0)
    assert run(engine) == run(HFEngine(models["llama"], tokenizer))
    assert engine.ledger.draft_accepted == 0
    # 16 sequences of at most 32 tokens. Each halves its acceptance rate per failed draft, so after
    # 4 + 3 + 2 + 2 tokens it is below 0.1 and only probes 2 tokens every 8th step: at most 16 + 2 * 4
    # tokens a sequence. One that never backed off would propose 2+ per token generated.
    assert engine.ledger.draft_proposed <= 16 * (16 + 2 * 4)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["particle", "treepo"])
def test_search_runs_identical_on_50_problems(arith_engines, strategy):
    plain, drafted = arith_engines
    questions = [p.question for p in generate(3, 50, seed=5)]
    options = {"prm": load_prm("arith")} if strategy == "particle" else {"select": "majority"}
    ref = solve_many(plain, questions, strategy=strategy, budget=8, seed=3, **options)
    got = solve_many(drafted["spine"], questions, strategy=strategy, budget=8, seed=3, **options)
    assert [r.answer for r in got] == [r.answer for r in ref]
    assert [tree_snapshot(r) for r in got] == [tree_snapshot(r) for r in ref]
    assert sum(r.tree.ledger.draft_accepted for r in got) > 0


def test_forward_cost_fit_separates_fixed_from_per_token_cost():
    cost = ForwardCost(decay=1.0, warmup=4)
    assert cost.threshold() == 0.0  # nothing measured: draft freely
    for fed in (16, 16, 16, 16, 16):
        cost.record(fed, 16, 0.002 + 0.0001 * fed)
    assert cost.per_token() is None  # fed never varied: per-token cost unknown
    for fed in (32, 48, 80, 64, 24):
        cost.record(fed, 24, 0.002 + 0.0001 * fed)
    assert cost.per_token() == pytest.approx(0.0001, rel=1e-6)
    # A fed token costs 0.1 ms; the steps yield 5*16 + 5*24 tokens in 10*2 ms + 0.1 ms * 328 fed.
    assert cost.threshold() == pytest.approx(0.0001 * 200 / (0.02 + 0.0328), rel=1e-6)


def test_cost_threshold_cuts_drafts_but_not_tokens(arith_engines):
    plain, _ = arith_engines
    path = resolve_model("arith")
    questions = [p.question for p in generate(3, 4, seed=5)]
    before = plain.ledger.forward_passes
    ref = [tree_snapshot(r) for r in solve_many(plain, questions, strategy="particle", budget=8, seed=2,
                                                prm=load_prm("arith"))]
    plain_forwards = plain.ledger.forward_passes - before
    proposed, forwards = {}, {}
    for threshold in (0.0, 1.0):
        engine = HFEngine.from_pretrained(path, dtype="float32", device="cpu", draft="spine", draft_threshold=threshold)
        out = solve_many(engine, questions, strategy="particle", budget=8, seed=2, prm=load_prm("arith"))
        assert [tree_snapshot(r) for r in out] == ref
        proposed[threshold] = engine.ledger.draft_proposed
        forwards[threshold] = engine.ledger.forward_passes
    # At threshold 1 a draft token must bring a whole accepted token: drafts shrink to the accepted length.
    assert proposed[1.0] < proposed[0.0] / 2
    assert forwards[0.0] < plain_forwards
    with pytest.raises(ReasonError, match="draft_threshold"):
        HFEngine(plain.model, plain.tokenizer, draft="spine", draft_threshold=1.5)



def test_run_index_is_bounded_and_keeps_the_newest():
    """The run-wide index drops its oldest sequences past its bound, and every occurrence it keeps
    points into a sequence it still holds."""
    from reason.core.draft.suffix import RunIndex

    idx = RunIndex(max_tokens=50)
    for k in range(40):
        idx.add([k % 7, (k * 3) % 5, 1, 2, 3, k], order=k)
    assert idx.tokens <= 50
    kept = {id(d) for d in idx.docs}
    assert all(id(doc) in kept for entries in idx.grams.values() for doc, _ in entries)
    assert [d.order for d in idx.docs] == sorted(d.order for d in idx.docs)
    assert idx.docs[-1].tokens[-1] == 39
    assert sum(len(e) for e in idx.grams.values()) == sum(len(d.tokens) - 1 for d in idx.docs)


def test_run_index_drafts_for_a_new_tree(arith_engines):
    """A second, fresh tree of a prompt the run already decoded drafts from the run-wide index:
    almost every token is accepted, where the tree itself holds nothing yet."""
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu", draft="suffix",
                                      draft_threshold=0.0)
    plain, _ = arith_engines
    stop = Stop(max_tokens=40)
    outs = []
    for engine_ in (engine, engine, plain):
        tree = engine_.new_tree("((23+20)*5-17)*3")
        before = (engine_.ledger.draft_accepted, engine_.ledger.generated_tokens)
        [kids] = engine_.expand_many([ExpandRequest(tree, tree.root, 1, stop, Sampling(temperature=0.0))])
        outs.append((tuple(kids[0].token_ids), engine_.ledger.draft_accepted - before[0],
                     engine_.ledger.generated_tokens - before[1]))
    (first, acc1, _), (second, acc2, made2), (ref, _, _) = outs
    assert first == second == ref
    assert acc2 > acc1 and acc2 >= 0.7 * made2
