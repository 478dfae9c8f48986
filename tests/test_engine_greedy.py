"""Greedy expansion reproduces `model.generate(do_sample=False)` token for token."""

from __future__ import annotations

import pytest
import torch

from reason.core.engine.base import Sampling, Stop
from reason.core.engine.hf import HFEngine

PROMPT = "Problem: What is 12 + 30 * 2?\nStep 1: First compute"
NEW = 24


def reference(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids])
    out = model.generate(
        x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n, min_new_tokens=n, eos_token_id=None
    )
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "qwen3"])
def test_greedy_matches_generate(models, tokenizer, arch):
    model = models[arch]
    engine = HFEngine(model, tokenizer)
    tree = engine.new_tree(PROMPT)
    ref = reference(model, tree.root.token_ids, NEW)

    [child] = engine.expand(tree, tree.root, 1, Stop(max_tokens=NEW, eos=False), Sampling(temperature=0))
    assert child.token_ids == ref
    assert child.finish_reason == "length"
    assert len(child.logprobs) == NEW and all(lp <= 0 for lp in child.logprobs)

    # The same path grown in segments through intermediate nodes.
    node, grown = tree.root, []
    for _ in range(4):
        [node] = engine.expand(tree, node, 1, Stop(segment_tokens=NEW // 4, eos=False), Sampling(temperature=0))
        assert node.finish_reason == "segment"
        grown += node.token_ids
    assert grown == ref
    assert tree.ledger.prefill_tokens == tree.ledger.prompt_tokens


def test_greedy_siblings_are_identical_and_logprobs_match_model(llama, tokenizer):
    engine = HFEngine(llama, tokenizer)
    tree = engine.new_tree(PROMPT)
    kids = engine.expand(tree, tree.root, 3, Stop(max_tokens=8, eos=False), Sampling(temperature=0))
    assert len({tuple(k.token_ids) for k in kids}) == 1
    ids = torch.tensor([tree.prefix_ids(kids[0])])
    with torch.no_grad():
        logp = torch.log_softmax(llama(ids).logits[0].float(), -1)
    p = len(tree.root.token_ids)
    expected = [logp[p - 1 + i, t].item() for i, t in enumerate(kids[0].token_ids)]
    assert kids[0].logprobs == pytest.approx(expected, abs=1e-4)


def test_chat_messages_use_the_template(llama, tokenizer):
    engine = HFEngine(llama, tokenizer)
    tree = engine.new_tree([{"role": "user", "content": "What is 2+2?"}])
    assert tree.root.text.startswith("<|im_start|>user\nWhat is 2+2?<|im_end|>")
    assert tree.root.text.endswith("<|im_start|>assistant\n")
