"""Particle filtering, ePF and particle Gibbs on the bundled arith model (held-out level-3 problems):
weights reset after resampling, one expansion per node and step, ePF's annealing temperature and
look-ahead modulation, aggregation, token budgets and determinism."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

import pytest

from reason.core.context import SearchContext
from reason.core.errors import ReasonError
from reason.core.tree import Tree
from reason.shortcuts import solve, solve_many
from rewards.catalog import load_prm
from search.weights import (
    annealing_temperature,
    ess,
    logit,
    resample,
    softmax,
    softmax_weights,
)
from tasks.arith.problems import generate


@pytest.fixture(scope="module")
def questions():
    return [p.question for p in generate(3, 16, seed=11)]


@contextmanager
def _recorded_expansions() -> Iterator[dict[int, list[tuple[int, int]]]]:
    """Record every ``ctx.expand`` request, per tree: ``(node id, n)``. A spy: the real expansion runs."""
    calls: dict[int, list[tuple[int, int]]] = defaultdict(list)
    real = SearchContext.expand

    async def expand(self, node, n=1, stop=None, sampling=None, first=None):
        calls[self.tree.uid].append((node.id, n))
        return await real(self, node, n, stop, sampling, first)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchContext, "expand", expand)
        yield calls


def _expected_requests(tree: Tree, history: list[dict], n: int) -> list[tuple[int, int]]:
    """The requests the documented rule makes, read back from the history: the root's ``n``
    samples, then per step one look-ahead request per unfinished pool node (as many samples as
    pool entries on it) and, after resampling, one request per unfinished node for its slots that
    inherit no look-ahead step."""
    node = tree.node
    out = [(tree.root.id, n)]
    for h in history:
        pool = h["pool"]
        if "ahead" in h:
            out += Counter(i for i in pool if not node(i).finished).items()
        if not h["resampled"]:
            continue
        ahead = h.get("ahead", [None] * len(pool))
        seen: set[int] = set()
        fresh: Counter[int] = Counter()
        for i in h["picks"]:
            inherits = i not in seen and ahead[i] is not None
            seen.add(i)
            if not node(pool[i]).finished and not inherits:
                fresh[pool[i]] += 1
        out += fresh.items()
    return out


def _resampling_probabilities(tree: Tree, h: dict, prm: str) -> tuple[list[float], list[float]]:
    """The step's look-ahead-modulated base distribution and the annealed one it resampled from,
    recomputed from the scores in the tree."""
    scores = [tree.node(i).scores[prm] for i in h["pool"]]
    ahead = h.get("ahead", [None] * len(scores))
    aims = [tree.node(a).scores[prm] if a is not None else s for a, s in zip(ahead, scores)]
    logits = [logit(s) + (logit(a) if "ahead" in h else 0.0) for s, a in zip(scores, aims)]
    return softmax(logits), softmax(logits, h["temperature"])


def test_annealing_temperature_is_its_hubs_closed_form():
    p = [0.65] + [0.05] * 7  # ESS = 1 / (0.4225 + 7 * 0.0025) = 2.2727...
    n, big_t = 8, 40
    assert ess(p) == pytest.approx(1 / 0.44)
    for t in (1, 4, 19):
        assert annealing_temperature(p, t, big_t, n) == pytest.approx((n / ess(p)) * (1 - t / big_t))
    assert annealing_temperature(p, 20, big_t, n) == 1.0  # t / T = 1/2: past the early phase
    flat = [1 / n] * n
    assert annealing_temperature(flat, 1, big_t, n) == 1.0  # ESS = N: no collapse
    # The temperature never drops below 1 (here (N/ESS)(1 - t/T) = 0.57).
    assert annealing_temperature(p, 34, big_t, n, ess_threshold=0.9, phase=0.9) == 1.0
    assert annealing_temperature(p, 1, big_t, 1) == 1.0  # one free particle: nothing to anneal
    # its_hub clips each probability to [1e-7, 1 - 1e-7] in the ESS.
    assert ess([1.0, 0.0]) == pytest.approx(1 / ((1 - 1e-7) ** 2 + 1e-14))


def test_resampling_schemes():
    w = softmax_weights([0.9, 0.5, 0.1], 1.0)
    assert abs(sum(w) - 1.0) < 1e-12 and w[0] > w[1] > w[2]
    rng = random.Random(0)
    sys_picks = resample(w, 1000, rng.random, "systematic")
    assert abs(sys_picks.count(0) / 1000 - w[0]) < 0.01  # systematic: within 1/N of the weight
    multi = resample(w, 20000, rng.random, "multinomial")
    assert abs(multi.count(0) / 20000 - w[0]) < 0.02
    with pytest.raises(ReasonError, match="^resampling:"):
        resample(w, 3, rng.random, "stratified-ish")


def test_particle_weights_reset_and_one_expansion_per_node(engine, questions):
    prm, n = load_prm("arith"), 8
    with _recorded_expansions() as calls:
        results = solve_many(engine, questions[:2], strategy="particle", budget=n, prm=prm, seed=9,
                             aggregation="model")
    for r in results:
        # The PRM scored each whole partial solution as one step (model aggregation).
        assert any(f"{prm.name}.model" in x.extra for x in r.tree)
        assert not any(f"{prm.name}.steps" in x.extra for x in r.tree)
        tree, history = r.tree, r.info["history"]
        assert history and not history[-1]["resampled"]
        for h in history:
            assert len(h["pool"]) == len(h["weights"]) == n and "ahead" not in h
            if h["resampled"]:
                assert h["weights"] == [1 / n] * n and h["temperature"] == 1.0
        # The last step keeps its PF weights: softmax of the logits of the final particles' scores.
        last = history[-1]
        final = softmax_weights([tree.node(i).scores[prm.name] for i in last["pool"]], 1.0)
        assert last["weights"] == pytest.approx(final, rel=1e-12)
        # One request per node for all the particles on it; no node is ever expanded twice.
        requests = calls[tree.uid]
        assert sorted(requests) == sorted(_expected_requests(tree, history, n))
        assert len({node for node, _ in requests}) == len(requests)
        # Request entries go to slots one to one: a merged child holds as many particles as
        # samples produced it (its count may be larger: samples of other requests).
        for before, after in pairwise(history):
            slots = [before["pool"][i] for i in before["picks"]]
            new = [i for i in after["pool"] if tree.node(i).depth == after["step"]]
            assert Counter(tree.node(i).parent.id for i in new) == Counter(s for s in slots if not tree.node(s).finished)
            for i, k in Counter(new).items():
                assert tree.node(i).count >= k
        assert {r.tree.node(c.node_id) for c in r.candidates} == {tree.node(i) for i in last["pool"]}
        # No two siblings hold the same tokens.
        for node in tree:
            ids = [tuple(c.token_ids) for c in node.children]
            assert len(ids) == len(set(ids))


def test_epf_annealing_and_lookahead_kept_as_next_step(engine, questions):
    # A soft PRM (wrong steps 0.3, right ones 0.9) so the ESS falls below N/2 only sometimes (on these
    # two harder problems it does).
    prm, n, max_steps = load_prm("arith", high=0.9, low=0.3), 8, 40
    with _recorded_expansions() as calls:
        results = solve_many(engine, [questions[2], questions[4]], strategy="epf", budget=n, prm=prm, seed=5,
                             select="vote")
    annealed = reused = 0
    for r in results:
        tree, history = r.tree, r.info["history"]
        assert sorted(calls[tree.uid]) == sorted(_expected_requests(tree, history, n))
        for h, nxt in pairwise(history):
            assert h["resampled"] and h["weights"] == [1 / n] * n
            base, annealed_p = _resampling_probabilities(tree, h, prm.name)
            assert h["ess"] == pytest.approx(ess(base), rel=1e-9)
            expected = annealing_temperature(base, h["step"], max_steps, n)
            assert h["temperature"] == pytest.approx(expected, rel=1e-12)
            annealed += h["temperature"] > 1.0
            # Systematic resampling: entry i is drawn floor or ceil of N * p'_i times.
            copies = Counter(h["picks"])
            for i, p in enumerate(annealed_p):
                assert math.floor(n * p) <= copies[i] <= math.ceil(n * p)
            # The first slot drawn from an entry continues with that entry's look-ahead step.
            seen: set[int] = set()
            for slot, i in enumerate(h["picks"]):
                if i not in seen and h["ahead"][i] is not None:
                    assert nxt["pool"][slot] == h["ahead"][i]
                    reused += 1
                seen.add(i)
        # select="vote": the answer with the largest summed final weight.
        last = history[-1]
        votes: dict[str, float] = defaultdict(float)
        for i, w in zip(last["pool"], last["weights"]):
            answer = r.candidates[[c.node_id for c in r.candidates].index(i)].answer
            if answer is not None:
                votes[answer] += w
        if votes:
            assert votes[r.answer] == pytest.approx(max(votes.values()))
    assert annealed and reused


def test_particle_gibbs_reference_drawn_from_final_weights(engine, questions):
    prm = load_prm("arith")
    results = solve_many(engine, questions[:2], strategy="particle", budget=6, prm=prm, seed=4, iterations=2)
    for r in results:
        assert r.info["particles"] == 3 and r.info["iterations"] == 2
        history = r.info["history"]
        first = [h for h in history if h["iteration"] == 0]
        second = [h for h in history if h["iteration"] == 1]
        assert first and second
        [ref] = r.info["references"]
        # Drawn among the first sweep's final particles, which kept their weights (no resampling).
        last = first[-1]
        assert not last["resampled"] and ref in last["pool"]
        assert last["weights"][last["pool"].index(ref)] > 0
        # The second sweep's slot 0 walks the reference path, step by step, to its end.
        path = [x.id for x in r.tree.path(r.tree.node(ref))[1:]]
        assert [h["pool"][0] for h in second] == [path[min(k, len(path) - 1)] for k in range(len(second))]
        for h in second:
            if h["resampled"]:
                assert h["weights"] == [1 / 3] * 3
        assert ref in [c.node_id for c in r.candidates]
        assert r.tree.node(ref).finish_reason == "eos"
    with pytest.raises(ReasonError, match="^iterations:"):
        solve_many(engine, questions[:1], strategy="particle", budget=8, prm=prm, iterations=8)


def test_token_budget_and_determinism(engine, questions):
    prm, q = load_prm("arith"), questions[0]
    for strategy, options in (("epf", {}), ("particle", {"iterations": 2})):
        capped = solve(engine, q, strategy=strategy, budget=8, prm=prm, budget_tokens=60, seed=2, **options)
        assert 0 < capped.ledger.generated_tokens <= 60
    a = solve(engine, q, strategy="epf", budget=4, prm=prm, seed=3)
    b = solve(engine, q, strategy="epf", budget=4, prm=prm, seed=3)
    assert a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"] and a.info["history"] == b.info["history"]


def test_a_capped_search_completes_its_best_particles(engine):
    """A token cap too small for the particles to finish step by step: when two more steps no
    longer fit, the best particles are completed with what is left, so every search answers."""
    prm = load_prm("arith")
    questions = [p.question for p in generate(3, 6, seed=5)]
    for strategy, cap in (("particle", 160), ("epf", 300)):  # epf's steps cost twice: look-ahead
        results = solve_many(engine, questions, strategy=strategy, budget=8, prm=prm, budget_tokens=cap, seed=1)
        for r in results:
            assert r.ledger.generated_tokens <= cap
            last = r.info["history"][-1]
            assert last["completed"], last  # the cap came before the particles finished
            completed = [r.tree.node(i) for i in last["completed"]]
            assert completed[0].finished and all(n.id in last["pool"] for n in completed)
            # Completions go on until the cap: at most the last one is cut short.
            assert all(n.finished for n in completed[:-1])
            assert r.answer is not None
