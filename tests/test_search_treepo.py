"""TreePO segment rollouts end to end on the bundled arith model, and the advantage estimators."""

from __future__ import annotations

import pytest

from reason.core.errors import ReasonError
from rewards.catalog import load_prm
from reason.shortcuts import solve, solve_many
from search.records import RolloutRecord, segment_advantages, tree_advantages
from search.treepo import has_repetition, path_weights, rollout, split_children
from tasks.arith.problems import generate
from tasks.arith.scorers import ArithVerifier

FINISHED = {"eos", "stop", "length", "answer", "max_depth", "repetition"}


@pytest.fixture(scope="module")
def problems():
    return generate(3, 8, seed=21)


def brute_advantages(paths, rewards, weighting):
    """A direct transcription of the definition, leaf by leaf, depth by depth."""
    out = []
    for i, p in enumerate(paths):
        terms = []
        for d in range(len(p) - 1):
            group = [j for j, q in enumerate(paths) if q[: d + 1] == p[: d + 1]]
            if d == 0 or len(group) > 1:
                terms.append((rewards[i] - sum(rewards[j] for j in group) / len(group), len(group)))
        if weighting == "group_size":
            out.append(sum(a * g for a, g in terms) / sum(g for _, g in terms))
        else:
            out.append(sum(a for a, _ in terms) / len(terms))
    return out


def test_tree_advantages_by_hand():
    # root 0 -> 1 -> {3: leaf a, 4: leaf b}; root 0 -> 2 (leaf c).
    paths = [[0, 1, 3], [0, 1, 4], [0, 2]]
    rewards = [1.0, 0.0, 0.0]
    gs, per_depth = tree_advantages(paths, rewards, "group_size")
    avg, _ = tree_advantages(paths, rewards, "average")
    # leaf a: d0 group {a,b,c} mean 1/3 -> 2/3 (size 3); d1 group {a,b} mean 1/2 -> 1/2 (size 2).
    assert gs[0] == pytest.approx((2 / 3 * 3 + 0.5 * 2) / 5)
    assert avg[0] == pytest.approx((2 / 3 + 0.5) / 2)
    assert per_depth[2] == [pytest.approx(-1 / 3)]  # leaf c: alone below the root
    assert per_depth[0] == [pytest.approx(2 / 3), pytest.approx(0.5)]
    with pytest.raises(ReasonError, match="weighting"):
        tree_advantages(paths, rewards, "median")


def test_segment_advantages_by_hand():
    # The tree above: node 1 holds a and b (mean 1/2), the root all three (mean 1/3).
    paths = [[0, 1, 3], [0, 1, 4], [0, 2]]
    seg = segment_advantages(paths, [1.0, 0.0, 0.0])
    assert seg[0] == [pytest.approx(1 / 2 - 1 / 3), pytest.approx(1 - 1 / 2)]
    assert seg[1] == [pytest.approx(1 / 2 - 1 / 3), pytest.approx(0 - 1 / 2)]
    assert seg[2] == [pytest.approx(0 - 1 / 3)]
    for path_adv, r in zip(seg, [1.0, 0.0, 0.0]):  # telescopes to the leaf's GRPO advantage
        assert sum(path_adv) == pytest.approx(r - 1 / 3)
    record = RolloutRecord(prompt_index=0, prompt_ids=[1], completion_ids=[5, 6, 7, 8, 9], logprobs=[0.0] * 5,
                           logprobs_mode="raw", segment_ends=[2, 5], path=paths[0], finish_reason="eos", text="", reward=1.0,
                           advantage=0.6, depth_advantages=[2 / 3, 0.5], segment_advantages=seg[0])
    assert record.token_advantages() == [pytest.approx(1 / 6)] * 2 + [pytest.approx(0.5)] * 3
    assert record.token_advantages("leaf") == [0.6] * 5
    with pytest.raises(ReasonError, match="per"):
        record.token_advantages("token")


def test_split_children_and_weights():
    shares = split_children(10, [1.0, 1.0, 1.0], [0.3, 0.1, 0.2])
    assert sum(shares) == 10 and min(shares) >= 1 and shares[1] == 4  # the tie goes to the smallest tie-break
    low = path_weights([-1.0, -9.0], "low_prob", 1.0)
    high = path_weights([-1.0, -9.0], "high_prob", 1.0)
    assert low[1] > low[0] and high[0] > high[1]
    assert split_children(2, [5.0, 1.0], [0, 0]) == [1, 1]
    assert has_repetition("abcd" * 20, size=8, times=8) and not has_repetition("abcdefgh" * 3, size=8, times=8)


def test_treepo_leaves_and_advantages_match_the_tree(engine, problems):
    qs = [p.question for p in problems]
    results = solve_many(engine, qs, strategy="treepo", budget=16, prm=None, seed=3, segment_tokens=8)
    independent = solve_many(engine, qs, strategy="best_of_n", budget=16, prm=None, select="majority", seed=3)
    for r in results:
        tree = r.tree
        leaves = [tree.node(c.node_id) for c in r.candidates]
        # a leaf sampled k times is one candidate of count k: the leaf-samples make the width
        assert sum(c.count for c in r.candidates) == 16 and len({n.id for n in leaves}) == len(leaves)
        assert all(n.is_leaf and n.finish_reason in FINISHED for n in leaves)
        # Every unfinished node is exactly one segment long and never more than 16 paths are live.
        assert all(len(n.token_ids) == 8 for n in tree if n.finish_reason == "segment")
        assert max(r.info["live_per_round"]) <= 16
        # Generated tokens are the tree's tokens and the merged duplicates': shared segments are paid once.
        assert r.ledger.generated_tokens == sum(len(n.token_ids) for n in tree if not n.is_root) + r.ledger.merged_tokens
        assert r.ledger.generated_tokens < sum((len(tree.prefix_ids(n)) - len(tree.root.token_ids)) * c.count
                                               for n, c in zip(leaves, r.candidates))
        # the advantages count each leaf once per sample; info lists them once per candidate
        paths = [[n.id for n in tree.path(leaf)] for leaf, c in zip(leaves, r.candidates) for _ in range(c.count)]
        rewards = [x for x, c in zip(r.info["rewards"], r.candidates) for _ in range(c.count)]
        firsts = [sum(c.count for c in r.candidates[:i]) for i in range(len(r.candidates))]
        for weighting in ("group_size", "average"):
            want = brute_advantages(paths, rewards, weighting)
            assert r.info["advantages"][weighting] == pytest.approx([want[i] for i in firsts])
        counts = {}
        for c in r.candidates:
            counts[c.answer] = counts.get(c.answer, 0) + c.count
        assert counts[r.answer] == max(v for a, v in counts.items() if a is not None)
    tree_tokens = sum(r.ledger.generated_tokens for r in results)
    flat_tokens = sum(r.ledger.generated_tokens for r in independent)
    assert tree_tokens < 0.9 * flat_tokens


def test_treepo_is_seeded_and_falls_back(engine, problems):
    q = problems[0].question
    a = solve(engine, q, strategy="treepo", budget=8, prm=None, seed=5, segment_tokens=8, policy="low_prob")
    b = solve(engine, q, strategy="treepo", budget=8, prm=None, seed=5, segment_tokens=8, policy="low_prob")
    assert a.tree.to_dict()["nodes"] == b.tree.to_dict()["nodes"]
    # One segment per path: every path stops at max_depth, so the width is reached only by fallback.
    for how in ("random", "min_logprob"):
        r = solve(engine, q, strategy="treepo", budget=8, prm=None, seed=5, segment_tokens=4, max_depth=2,
                  first_divergence=2, fallback=how)
        assert sum(c.count for c in r.candidates) == 8 and r.info["fallbacks"] >= 1
        assert all(r.tree.node(c.node_id).depth <= 2 for c in r.candidates)


def test_treepo_with_prm_and_token_cap(engine, problems):
    prm = load_prm("arith")
    r = solve(engine, problems[1].question, strategy="treepo", budget=16, prm=prm, seed=1, select="prm", segment_tokens=8)
    scores = [c.score for c in r.candidates]
    assert r.info["rewards"] == scores and r.answer == r.candidates[scores.index(max(scores))].answer
    from search.budget import Budget

    capped = solve(engine, problems[1].question, strategy="treepo", budget=Budget(n=16, max_tokens=40), prm=None,
                   seed=1, segment_tokens=8)
    assert capped.info["stopped_by_budget"] and capped.candidates
    assert capped.ledger.generated_tokens < 40 + 16 * 8


def test_rollout_records(engine, problems):
    prompts = [p.prompt for p in problems[:3]]
    answers = [str(p.answer) for p in problems[:3]]
    records = rollout(engine, prompts, n=8, answers=answers, verifier="arith", seed=2, segment_tokens=8,
                      temperature=1.0, max_tokens=96)
    assert [r.prompt_index for r in records] == sorted(r.prompt_index for r in records)
    verifier = ArithVerifier()
    for index in range(3):
        group = [r for r in records if r.prompt_index == index]
        assert len(group) == 8
        expected_adv = brute_advantages([r.path for r in group], [r.reward for r in group], "group_size")
        assert [r.advantage for r in group] == pytest.approx(expected_adv)
        assert sum(r.depth_advantages[0] for r in group) == pytest.approx(0.0)
        for r in group:
            assert r.prompt_ids == engine.tokenize_prompt(prompts[index])[0]
            assert len(r.logprobs) == len(r.completion_ids) == r.segment_ends[-1]
            assert r.segment_ends == sorted(r.segment_ends) and len(r.segment_ends) == len(r.path) - 1
            assert engine.decode(r.completion_ids).startswith(r.text)  # the text leaves out EOS
            assert r.reward == verifier.verify(problems[index].question, r.text, answers[index])
    by_fn = rollout(engine, prompts[:1], n=4, reward=lambda i, text: float(len(text)), seed=2, segment_tokens=8)
    assert [r.reward for r in by_fn] == [float(len(r.text)) for r in by_fn]
    with pytest.raises(ReasonError, match="reward"):
        rollout(engine, prompts, n=4)
