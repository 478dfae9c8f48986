"""``reason.rollout``: any strategy's leaves as trainer records, exactly n per prompt."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import torch

import reason
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from rewards.catalog import load_prm
from tasks.arith.problems import generate


@pytest.fixture(scope="module")
def problems():
    return generate(3, 3, seed=21)


@pytest.mark.parametrize("strategy, options", [
    ("best_of_n", {"select": "majority"}),
    ("particle", {"prm": load_prm("arith")}),
    ("treepo", {"segment_tokens": 8}),
])
def test_records_per_strategy(engine, problems, strategy, options):
    n = 6
    records = reason.rollout(engine, [p.prompt for p in problems], strategy=strategy, n=n, seed=3,
                             answers=[p.answer for p in problems], verifier="arith", **options)
    assert [r.prompt_index for r in records] == [i for i in range(len(problems)) for _ in range(n)]
    for r in records:
        assert r.prompt_ids and r.completion_ids and len(r.logprobs) == len(r.completion_ids)
        assert r.logprobs_mode == "raw"  # the library's default: the model's own logprobs
        assert r.segment_ends[-1] == len(r.completion_ids) and r.segment_ends == sorted(r.segment_ends)
        assert r.reward in (0.0, 1.0)
        assert r.path[0] == 0  # the root
    for i in range(len(problems)):
        group = [r for r in records if r.prompt_index == i]
        distinct = {tuple(r.path): r for r in group}.values()  # padding repeats leaves
        if len({r.reward for r in distinct}) == 1:
            assert all(r.advantage == 0 for r in group)
    if strategy == "best_of_n":  # independent samples: one segment each, plain group-relative advantages
        assert all(len(r.segment_ends) == 1 for r in records)
        group = records[:n]
        mean = sum(r.reward for r in group) / n
        assert [r.advantage for r in group] == pytest.approx([r.reward - mean for r in group])


def test_user_reward_and_errors(engine, problems):
    records = reason.rollout(engine, [problems[0].prompt], strategy="best_of_n", n=4, select="majority",
                             reward=lambda i, text: float(len(text) % 2))
    assert len(records) == 4 and all(r.reward == float(len(r.text) % 2) for r in records)
    with pytest.raises(ReasonError, match="reward: rollout needs rewards"):
        reason.rollout(engine, [problems[0].prompt], strategy="best_of_n", n=4, select="majority")
    with pytest.raises(ReasonError, match="option"):
        reason.rollout(engine, [problems[0].prompt], strategy="best_of_n", n=4, bogus=1, reward=lambda i, t: 0.0)


def completion_groups(ids: list[list[int]], advantages: list[Any]) -> dict[tuple[int, ...], list[Any]]:
    """Advantages grouped by completion (rows in any order; equal completions may repeat), each group sorted."""
    out: dict[tuple[int, ...], list[Any]] = defaultdict(list)
    for row, adv in zip(ids, advantages):
        out[tuple(row)].append(adv)
    return {k: sorted(v) for k, v in out.items()}


def flat(rows: list[Any]) -> list[float]:
    """Scalars and tuples of scalars as one list of floats."""
    return [x for row in rows for x in (row if isinstance(row, tuple) else (row,))]


@pytest.mark.parametrize("per", ["leaf", "segment"])
def test_trl_tree_advantages_reach_the_loss(tmp_path, monkeypatch, per):
    """Two GRPO steps where the advantages TRL's loss receives are the TreePO records' tree advantages."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reason.rl.trl import TreeRollout, tree_grpo_trainer

    path = resolve_model("arith")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    tok = AutoTokenizer.from_pretrained(path)
    probs = generate(3, 4, seed=77)
    # A reward that differs between distinct leaves (the arith model often agrees with itself on the
    # answer, and identical completions are merged), so the tree advantages are not all zero.
    rollout = TreeRollout(reward=lambda i, text: float(sum(map(ord, text)) % 97), segment_tokens=8, max_tokens=64)

    def reward(completions, **kwargs):
        return kwargs["tree_reward"]  # forwarded by the rollout

    config = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=8,
                            max_completion_length=64, max_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True,
                            save_strategy="no")
    trainer = tree_grpo_trainer(per=per, model=model, processing_class=tok, reward_funcs=reward, args=config,
                                train_dataset=Dataset.from_list([{"prompt": p.prompt} for p in probs]),
                                rollout_func=rollout)
    # A spy on TRL's loss: it records the batch exactly as TRL hands it over, then computes the loss as usual.
    seen: list[dict[str, torch.Tensor]] = []
    compute_loss = trainer.compute_loss

    def spy(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        seen.append({k: inputs[k].detach().clone() for k in ("completion_ids", "advantages")})
        return compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer, "compute_loss", spy)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert rollout.calls == 2 and len(rollout.last_records) == 8 and len(seen) == 2
    records = rollout.last_records
    assert all(r.logprobs_mode == "sampling" for r in records)  # what TRL's importance sampling expects
    batch = seen[-1]  # the last step trains on the last rollout, its rows shuffled by TRL
    width = batch["completion_ids"].shape[1]
    assert width == max(len(r.completion_ids) for r in records)

    def pad(values: list[Any], fill: Any) -> list[Any]:
        return list(values) + [fill] * (width - len(values))

    want_ids = [pad(r.completion_ids, tok.pad_token_id) for r in records]
    if per == "leaf":
        assert batch["advantages"].shape == (8,)
        want = completion_groups(want_ids, [r.advantage for r in records])
    else:  # (B, T): each token its segment's credit, zero past the completion
        assert batch["advantages"].shape == (8, width)
        want = completion_groups(want_ids, [tuple(pad(r.token_advantages(), 0.0)) for r in records])
        assert any(len(set(r.segment_advantages)) > 1 for r in records)  # credit differs along a path
    got = completion_groups(batch["completion_ids"].tolist(), [
        a if per == "leaf" else tuple(a) for a in batch["advantages"].tolist()])
    assert got.keys() == want.keys()
    for key, advs in want.items():
        assert flat(got[key]) == pytest.approx(flat(advs), abs=1e-6)
    assert any(r.advantage != 0 for r in records)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the weights moved
    assert rollout.engine.weights_version == 1  # the second rollout saw the first step's weights, no stale KV
