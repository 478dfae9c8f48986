"""RL rollouts over the merged tree: a leaf standing for k identical samples gives k records and
counts k times in the advantages; records carry the logprobs they say they carry (checked against a
fresh forward of prompt + completion), from the hf engine with and without a drafter and from
remote engines; first-finish copes with merged and empty expansions."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import reason
from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.openai import OpenAIEngine
from reason.core.engine.token_server import TokenServerEngine
from reason.core.engine.vllm import sampled_outputs, sampling_kwargs
from reason.core.errors import ReasonError
from reason.rl.local import LocalEngineActor, SamplingParams
from reason.serve import create_app
from reason.serve.thread import ServerThread
from reason.shortcuts import solve, solve_many
from tasks.arith.problems import generate
from tasks.registry import resolve_model

TOL = 1e-4


@pytest.fixture(scope="module")
def drafted(engine):
    return HFEngine(engine.model, engine.tokenizer, draft="suffix", draft_threshold=0.0)  # no timing: always drafts


@pytest.fixture(scope="module")
def problems():
    return generate(3, 3, seed=31)


def reference(model, prompt_ids, completion_ids, temperature, top_p=1.0, top_k=0):
    """Each completion token's raw and sampling logprobs from one plain forward of prompt +
    completion, the processing applied here from its definition: softmax(z / T), cut to the top_k
    most likely tokens, then to those whose mass before them within that set (renormalised) is
    below top_p, renormalised (0 for greedy)."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.inference_mode():
        z = model(ids).logits[0, len(prompt_ids) - 1 : -1].double()
    t = torch.tensor(completion_ids)[:, None]
    raw = torch.log_softmax(z, -1).gather(1, t).squeeze(1)
    if temperature == 0:
        return raw.tolist(), [0.0] * len(completion_ids)
    p = torch.softmax(z / temperature, -1)
    p_sorted, order = p.sort(-1, descending=True)
    mass = p_sorted[:, :top_k].sum(-1, keepdim=True) if top_k else p_sorted.sum(-1, keepdim=True)
    keep = (p_sorted.cumsum(-1) - p_sorted) < top_p * mass
    if top_k:
        keep[:, top_k:] = False
    keep[:, 0] = True
    q = torch.zeros_like(p).scatter(1, order, torch.where(keep, p_sorted, 0.0))
    q = q / q.sum(-1, keepdim=True)
    return raw.tolist(), torch.log(q.gather(1, t).squeeze(1)).tolist()


def gap(a, b) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


# -- multiplicity ------------------------------------------------------------------------------


def test_a_leaf_of_count_k_is_k_records_and_k_group_members(engine, problems):
    """Low temperature: many identical samples merge. Each prompt still gives exactly n records, a
    candidate of count k gives k records with its path, and the advantages are plain GRPO's over
    the n samples (reward minus the mean of all n, each distinct completion counted k times)."""
    n, seed, temperature = 8, 4, 0.3
    prompts = [p.prompt for p in problems]

    def reward(i, text):
        return float(len(text) % 5)

    records = reason.rollout(engine, prompts, strategy="best_of_n", select="majority", n=n, seed=seed,
                             temperature=temperature, reward=reward, max_tokens=64)
    same = solve_many(engine, [p.question for p in problems], strategy="best_of_n", select="majority", budget=n,
                      seed=seed, temperature=temperature, max_tokens=64, prompts=prompts)
    merged = 0
    for index, result in enumerate(same):
        group = [r for r in records if r.prompt_index == index]
        assert len(group) == n
        per_leaf = Counter(r.path[-1] for r in group)
        assert per_leaf == {c.node_id: c.count for c in result.candidates}
        for c in result.candidates:
            assert result.tree.node(c.node_id).count == c.count
        merged += sum(c.count > 1 for c in result.candidates)
        mean = sum(r.reward for r in group) / n
        assert [r.advantage for r in group] == pytest.approx([r.reward - mean for r in group])
        assert [sum(r.segment_advantages) for r in group] == pytest.approx([r.reward - mean for r in group])
    assert merged > 0  # the case exercises merging


def test_treepo_leaf_samples_reach_the_width(engine, problems):
    """TreePO at low temperature: merged segments stand for several live paths, finished leaves
    for several samples; the leaf-samples (candidates' counts, the node counts) sum to the width
    and the rollout gives exactly the width in records without padding."""
    width = 8
    for problem in problems:
        r = solve(engine, problem.question, strategy="treepo", budget=width, seed=2, temperature=0.3,
                  segment_tokens=6, first_divergence=4)
        assert sum(c.count for c in r.candidates) == width
        assert all(r.tree.node(c.node_id).count == c.count for c in r.candidates)
        assert max(r.info["live_per_round"]) <= width
    records = reason.rollout(engine, [p.prompt for p in problems], n=width, seed=2, temperature=0.3,
                             segment_tokens=6, first_divergence=4, reward=lambda i, t: float(len(t) % 3),
                             exact_n=False)
    groups = Counter(r.prompt_index for r in records)
    assert groups == {i: width for i in range(len(problems))}
    assert any(k > 1 for k in Counter((r.prompt_index, tuple(r.path)) for r in records).values())


# -- logprobs in the mode the records state ----------------------------------------------------


@pytest.mark.parametrize("sampling", [Sampling(temperature=0.7, seed=3), Sampling(temperature=1.3, top_p=0.8, seed=4),
                                      Sampling(temperature=0.9, top_k=3, seed=5), Sampling(temperature=0.0)],
                         ids=["T0.7", "T1.3-p0.8", "T0.9-k3", "greedy"])
def test_nodes_carry_both_logprobs_with_and_without_a_drafter(engine, drafted, sampling):
    """The hf engine's nodes hold the model's own logprobs and the sampling distribution's, equal to
    a fresh forward's; drafting changes neither (its verification samples like plain decoding)."""
    trees = []
    accepted = drafted.ledger.draft_accepted
    for eng in (engine, drafted):
        tree = eng.new_tree("36*2+9*7\n")
        kids = eng.expand(tree, tree.root, 3, Stop(max_tokens=24), sampling)
        trees.append(kids)
        for kid in kids:
            raw, processed = reference(engine.model, tree.root.token_ids, kid.token_ids, sampling.temperature,
                                       sampling.top_p, sampling.top_k)
            assert gap(kid.logprobs, raw) < TOL and gap(kid.sampling_logprobs, processed) < TOL
    assert [k.token_ids for k in trees[0]] == [k.token_ids for k in trees[1]]
    assert drafted.ledger.draft_accepted > accepted  # drafted tokens were verified and kept


@pytest.mark.parametrize("mode", ["raw", "sampling"])
def test_rollout_records_state_their_logprobs(engine, drafted, problems, mode):
    """TreePO records (several segments each) at temperature 0.7 and top-p 0.9: their logprobs are
    those of the mode they state, from the plain engine and from a drafting one."""
    accepted = drafted.ledger.draft_accepted
    for eng in (engine, drafted):
        records = reason.rollout(eng, [problems[0].prompt], n=4, seed=6, temperature=0.7, top_p=0.9,
                                 segment_tokens=8, max_tokens=48, reward=lambda i, t: 0.0, logprobs=mode)
        assert len(records) == 4 and all(r.logprobs_mode == mode for r in records)
        assert any(len(r.segment_ends) > 1 for r in records)
        for r in records:
            raw, processed = reference(engine.model, r.prompt_ids, r.completion_ids, 0.7, 0.9)
            assert gap(r.logprobs, raw if mode == "raw" else processed) < TOL
            assert gap(r.logprobs, processed if mode == "raw" else raw) > 10 * TOL  # the modes differ here
    assert drafted.ledger.draft_accepted > accepted


def test_trainer_defaults(engine):
    from reason.rl.openrlhf import TreeAgentExecutor
    from reason.rl.trl import TreeRollout

    assert TreeRollout().logprobs == "sampling"
    assert TreeAgentExecutor().logprobs == "sampling"
    assert TreeAgentExecutor(logprobs_mode="raw_logprobs").logprobs == "raw"
    with pytest.raises(ReasonError, match="^logprobs: "):
        TreeRollout(logprobs="processed")
    with pytest.raises(ReasonError, match="^logprobs_mode: "):
        TreeAgentExecutor(logprobs_mode="raw_logits")


# -- remote engines --------------------------------------------------------------------------


def token_server(engine, mode):
    actor = LocalEngineActor(engine, logprobs_mode=mode)

    async def generate(ids, request, max_tokens):
        out = await actor.generate(ids, SamplingParams(**sampling_kwargs(request, max_tokens)))
        return sampled_outputs(out, request, mode)

    return TokenServerEngine(generate, engine.tokenizer, max_context=256)


def test_remote_engines_report_the_logprobs_their_server_gives(engine, problems):
    """A vLLM-style server reports one kind: records of that kind equal the in-process engine's;
    asking for the other kind is a one-line error naming the field and the fix."""
    options = {"n": 4, "seed": 1, "temperature": 0.8, "segment_tokens": 8, "max_tokens": 32,
               "reward": lambda i, t: 0.0}
    prompts = [problems[1].prompt]
    for server_mode, mode, other in (("raw_logprobs", "raw", "sampling"), ("processed_logprobs", "sampling", "raw")):
        remote = token_server(engine, server_mode)
        got = reason.rollout(remote, prompts, logprobs=mode, **options)
        want = reason.rollout(engine, prompts, logprobs=mode, **options)
        assert [r.completion_ids for r in got] == [r.completion_ids for r in want]
        assert max(gap(r.logprobs, q.logprobs) for r, q in zip(got, want)) < TOL
        with pytest.raises(ReasonError) as info:
            reason.rollout(token_server(engine, server_mode), prompts, logprobs=other, **options)
        message = str(info.value)
        assert "\n" not in message and message.startswith("logprobs: ") and f"logprobs='{mode}'" in message


def test_reason_serve_carries_sampling_logprobs_over_http(engine, problems):
    """``reason serve`` returns both kinds; the openai backend keeps both, so rollouts over HTTP give
    the in-process records in either mode."""
    served = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    options = {"n": 4, "seed": 2, "temperature": 0.7, "segment_tokens": 8, "max_tokens": 32,
               "reward": lambda i, t: 0.0}
    prompts = [problems[2].prompt]
    with ServerThread(create_app(served, model_name="arith")) as srv:
        client = OpenAIEngine(srv.url, engine.tokenizer)
        try:
            for mode in ("raw", "sampling"):
                got = reason.rollout(client, prompts, logprobs=mode, **options)
                want = reason.rollout(engine, prompts, logprobs=mode, **options)
                assert [r.completion_ids for r in got] == [r.completion_ids for r in want]
                assert max(gap(r.logprobs, q.logprobs) for r, q in zip(got, want)) < TOL
        finally:
            client.close()


# -- first finish ------------------------------------------------------------------------------


def test_first_finish_with_merged_and_empty_expansions(engine, problems):
    q = problems[0].question
    r = solve(engine, q, strategy="first_finish", budget=8, k=3, temperature=0.2, seed=1)
    assert sum(c.count for c in r.candidates) == r.info["finished"] >= 3
    assert any(c.count > 1 for c in r.candidates)  # identical finishers merged, each still a vote
    assert len({c.node_id for c in r.candidates}) == len(r.candidates)
    empty = solve(engine, q, strategy="first_finish", budget=8, budget_tokens=4, k=1)
    assert empty.answer is None and empty.candidates == [] and empty.info["finished"] == 0
