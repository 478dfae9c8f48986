"""The Qwen PRM adapter, node-level scoring with per-node caching, aggregation and value models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForTokenClassification,
    Qwen2Config,
)

from reason.core.errors import ReasonError
from reason.core.tiny import build_tokenizer
from reason.core.tree import Tree
from rewards.catalog import load_prm, load_value
from rewards.prm.qwen import QWEN_MATH_SYSTEM, Qwen2ProcessRewardHead
from rewards.scoring import NodeScorer, NodeValuer, aggregate, split_steps

QUESTION = "What is 12 + 30 * 2?"
SOLUTIONS = [
    ["First, 30 * 2 = 60.", "Then 12 + 60 = 72.", "The answer is \\boxed{72}."],
    ["12 + 30 = 42."],
    ["Multiply: 30 * 2 = 60.", "Add 12: 72."],
]


def tiny_qwen_prm(path, tag="<extra_0>", seed=0):
    tok = build_tokenizer()
    if tag:
        tok.add_special_tokens({"additional_special_tokens": [tag]})
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=2, initializer_range=0.2)
    cfg.architectures = ["Qwen2ForProcessRewardModel"]
    torch.manual_seed(seed)
    model = Qwen2ProcessRewardHead(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    # The checkpoint's tokenizer as loaders see it (transformers picks the class from model_type).
    return model, AutoTokenizer.from_pretrained(path)


def direct_scores(model, tok, question, steps, tag="<extra_0>"):
    text = (f"<|im_start|>system\n{QWEN_MATH_SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{tag.join(steps) + tag}<|im_end|>\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tag_id = tok.convert_tokens_to_ids(tag)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])), -1)[0, :, 1]
    return [probs[i].item() for i, t in enumerate(ids) if t == tag_id]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-prm")
    model, tok = tiny_qwen_prm(path)
    return path, model, tok


def test_qwen_prm_matches_direct_computation_in_a_padded_batch(qwen):
    path, model, tok = qwen
    prm = load_prm(f"qwen={path}", dtype="float32", device="cpu")
    out = prm.score_batch([(QUESTION, s) for s in SOLUTIONS])
    assert prm.forwards == 1  # the three items fit one padded forward
    assert [len(s) for s in out.scores] == [3, 1, 2]
    for steps, got in zip(SOLUTIONS, out.scores):
        assert got == pytest.approx(direct_scores(model, tok, QUESTION, steps), abs=1e-5)
        assert all(0.0 <= x <= 1.0 for x in got)
    assert out.tokens > 0
    # A token budget too small for two items: one forward each, longest first, scores in item order.
    split = load_prm(f"qwen={path}", dtype="float32", device="cpu", batch_tokens=1)
    again = split.score_batch([(QUESTION, s) for s in SOLUTIONS])
    assert split.forwards == 3
    for got, want in zip(again.scores, out.scores):
        assert got == pytest.approx(want, abs=1e-5)


def test_qwen_prm_remote_code_path(qwen, tmp_path):
    path, model, tok = qwen
    remote = tmp_path / "remote"
    model.save_pretrained(remote)
    tok.save_pretrained(remote)
    (remote / "modeling_qwen2_rm.py").write_text(
        "from rewards.prm.qwen import Qwen2ProcessRewardHead\n\n\n"
        "class Qwen2ForProcessRewardModel(Qwen2ProcessRewardHead):\n"
        "    def forward(self, input_ids, attention_mask=None, **kw):\n"
        "        return (super().forward(input_ids, attention_mask),)\n"
    )
    cfg = json.loads((remote / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    prm = load_prm(f"qwen={remote}", trust_remote_code=True, dtype="float32", device="cpu")
    assert type(prm.model).__name__ == "Qwen2ForProcessRewardModel"
    assert prm.score(QUESTION, SOLUTIONS[0]) == pytest.approx(direct_scores(model, tok, QUESTION, SOLUTIONS[0]), abs=1e-5)


def test_prm_bad_input(qwen, tmp_path):
    path, _, _ = qwen
    with pytest.raises(ReasonError, match=r"^prm: unknown prm 'nope'"):
        load_prm("nope=/x")
    prm = load_prm(f"qwen={path}", dtype="float32")
    with pytest.raises(ReasonError, match=r"^steps: is empty"):
        prm.score(QUESTION, [])
    no_tag = tmp_path / "no-tag"
    tiny_qwen_prm(no_tag, tag=None)
    with pytest.raises(ReasonError, match=r"^step_tag: "):
        load_prm(f"qwen={no_tag}")
    with pytest.raises(ReasonError, match=r"^prm: no such path"):
        load_prm("qwen=./missing/prm")


def test_aggregations_and_split():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8 and aggregate(s, "min") == 0.5
    assert aggregate(s, "prod") == pytest.approx(0.36) and aggregate(s, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ReasonError, match="^aggregation: "):
        aggregate(s, "max")
    assert split_steps("a\n\nb\n\n\n\nc", "\n\n") == ["a", "b", "c"]


class CountingPRM:
    """Wraps a PRM and counts the items it is sent."""

    def __init__(self, prm):
        self.prm, self.items, self.calls = prm, 0, 0
        self.name, self.incremental = prm.name, prm.incremental

    def score_batch(self, items):
        self.calls += 1
        self.items += len(items)
        return self.prm.score_batch(items)


def depth4_tree():
    tree = Tree([1, 2, 3], "Q", meta={"question": QUESTION})
    frontier = [tree.root]
    for depth in range(4):
        nxt = []
        for node in frontier:
            for k in range(2):
                nxt.append(tree.add_child(node, [4 + k], f"step {depth}.{k} value {node.id * 2 + k}\n\n"))
        frontier = nxt
    return tree


@pytest.mark.parametrize("aggregation", ["last", "min", "prod", "mean", "model"])
def test_node_scoring_caches_and_charges_the_ledger(qwen, aggregation):
    path, model, tok = qwen
    counting = CountingPRM(load_prm(f"qwen={path}", dtype="float32"))
    scorer = NodeScorer(counting, aggregation=aggregation)
    tree = depth4_tree()
    nodes = [n for n in tree if not n.is_root]
    scores = scorer.score(tree, nodes)
    assert counting.items <= len(nodes)
    if aggregation != "model":
        assert counting.items == len(tree.leaves())  # inner nodes read their scores from a leaf's item
    assert tree.ledger.prm_calls == counting.items and tree.ledger.prm_tokens > 0
    before = counting.items
    assert scorer.score(tree, nodes) == scores
    assert counting.items == before  # the second request costs no model call
    leaf = tree.leaves()[-1]
    steps = [n.text.strip() for n in tree.path(leaf)[1:]]
    direct = direct_scores(model, tok, QUESTION, ["".join(t + "\n\n" for t in steps).strip()] if aggregation == "model" else steps)
    assert leaf.scores[counting.name] == pytest.approx(aggregate(direct, aggregation), abs=1e-5)
    # An inner node's score equals scoring its own path directly.
    inner = tree.path(leaf)[2]
    inner_steps = [n.text.strip() for n in tree.path(inner)[1:]]
    if aggregation != "model":
        assert inner.scores[counting.name] == pytest.approx(aggregate(direct_scores(model, tok, QUESTION, inner_steps), aggregation), abs=1e-5)


def test_value_models(qwen, tmp_path):
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    net = LlamaForTokenClassification(cfg).eval()
    net.save_pretrained(tmp_path / "v")
    tok.save_pretrained(tmp_path / "v")
    tok = AutoTokenizer.from_pretrained(tmp_path / "v")
    value = load_value(f"lm={tmp_path / 'v'}", dtype="float32")
    items = [(QUESTION, "First, 30 * 2 = 60."), (QUESTION, "12"), (QUESTION, "First, 30 * 2 = 60.\n\nThen 12 + 60 = 72.")]
    got = value.value_batch(items)
    for (q, p), v in zip(items, got.values):
        ids = tok(f"{q}\n{p}")["input_ids"]
        with torch.no_grad():
            expect = torch.sigmoid(net(torch.tensor([ids])).logits[0, -1, 0]).item()
        assert v == pytest.approx(expect, abs=1e-5)
    tree = depth4_tree()
    valuer = NodeValuer(value)
    leaves = tree.leaves()
    first = valuer.value(tree, leaves)
    assert tree.ledger.value_calls == len(leaves)
    assert valuer.value(tree, leaves) == first and tree.ledger.value_calls == len(leaves)

    path, model, ptok = qwen
    prm = load_prm(f"qwen={path}", dtype="float32")
    as_value = load_value("prm", prm=prm, aggregation="min")
    v = as_value.value(QUESTION, "\n\n".join(SOLUTIONS[0]))
    assert v == pytest.approx(min(direct_scores(model, ptok, QUESTION, SOLUTIONS[0])), abs=1e-5)
    with pytest.raises(ReasonError, match="^value: "):
        load_value("prm")
