"""The PRM adapters for Math-Shepherd, RLHFlow, Skywork and TRL token-classification checkpoints:
tiny models of each shape, saved to disk, loaded by name, scored in padded batches and compared with
a direct computation on each item alone."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForTokenClassification,
    MistralConfig,
    Qwen2Config,
)

from reason.core.errors import ReasonError
from reason.core.tiny import build_tokenizer
from rewards.catalog import load_prm
from rewards.prm.skywork import SkyworkValueHead

Q = "What is 12 + 30 * 2?"
BATCH = [
    ["First, 30 * 2 = 60.", "Then 12 + 60 = 72.", "The answer is 72."],
    ["12 + 30 = 42."],
    ["Multiply: 30 * 2 = 60.", "Add 12: 72."],
]
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             initializer_range=0.2)


def save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)  # the tokenizer as any loader sees it


def causal(config_cls, tok, seed=0, **extra):
    torch.manual_seed(seed)
    cfg = config_cls(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **SMALL, **extra)
    return AutoModelForCausalLM.from_config(cfg).eval()


def pair(logits_row, tok):
    plus, minus = tok.encode("+", add_special_tokens=False)[-1], tok.encode("-", add_special_tokens=False)[-1]
    return torch.softmax(logits_row[[plus, minus]], -1)[0].item()


def check_batch(prm, direct):
    out = prm.score_batch([(Q, s) for s in BATCH])
    for steps, got in zip(BATCH, out.scores):
        assert len(got) == len(steps)
        assert got == pytest.approx(direct(Q, steps), abs=1e-5)
        assert all(0.0 <= x <= 1.0 for x in got)
    assert out.tokens > 0


def test_math_shepherd(tmp_path):
    tok = build_tokenizer()
    tok.add_tokens(["ки"])
    model = causal(MistralConfig, tok, sliding_window=None)
    tok = save(model, tok, tmp_path / "ms")
    tag = tok.convert_tokens_to_ids("ки")

    def direct(q, steps):
        ids = tok(q + " " + "\n".join(f"{s} ки" for s in steps))["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        return [pair(logits[i], tok) for i, t in enumerate(ids) if t == tag]

    prm = load_prm(f"math-shepherd={tmp_path / 'ms'}", dtype="float32")
    check_batch(prm, direct)
    # Left truncation: the question's start goes, every tag stays, scores follow the truncated input.
    full = prm._prepare(Q, BATCH[0])[0]
    prm.max_length = len(full) - 3
    ids, pos = prm._prepare(Q, BATCH[0])
    assert ids == full[3:] and len(pos) == 3
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    assert prm.score(Q, BATCH[0]) == pytest.approx([pair(logits[p], tok) for p in pos], abs=1e-5)
    prm.max_length = 5
    with pytest.raises(ReasonError, match="^max_length:"):
        prm.score(Q, BATCH[0])


def test_rlhflow(tmp_path):
    tok = build_tokenizer()
    model = causal(LlamaConfig, tok, seed=1)
    tok = save(model, tok, tmp_path / "rl")

    def direct(q, steps):
        conv, out = [], []
        for k, step in enumerate(steps):
            conv.append({"role": "user", "content": f"{q} {step}" if k == 0 else step})
            ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            with torch.no_grad():
                out.append(pair(model(torch.tensor([list(ids)])).logits[0, -1], tok))
            conv.append({"role": "assistant", "content": "+"})
        return out

    check_batch(load_prm(f"rlhflow={tmp_path / 'rl'}", dtype="float32"), direct)


def test_skywork(tmp_path):
    tok = build_tokenizer()
    torch.manual_seed(2)
    model = SkyworkValueHead(causal(Qwen2Config, tok, seed=2)).eval()
    torch.nn.init.normal_(model.v_head.summary.weight, std=0.5)
    model.save_pretrained(tmp_path / "sky")
    tok.save_pretrained(tmp_path / "sky")
    tok = AutoTokenizer.from_pretrained(tmp_path / "sky")
    nl = tok.encode("\n", add_special_tokens=False)[0]

    def direct(q, steps):
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + tok(q + "\n", add_special_tokens=False)["input_ids"]
        pos = []
        for s in steps:
            ids = ids + tok(s, add_special_tokens=False)["input_ids"] + [nl]
            pos.append(len(ids) - 1)
        with torch.no_grad():
            h = model.backbone(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
            v = torch.sigmoid(h @ model.v_head.summary.weight[0] + model.v_head.summary.bias[0])
        return [v[p].item() for p in pos]

    check_batch(load_prm(f"skywork={tmp_path / 'sky'}", dtype="float32"), direct)
    with pytest.raises(ReasonError, match="^prm: .*no value head"):
        bare = tmp_path / "bare"
        causal(Qwen2Config, tok).save_pretrained(bare)
        tok.save_pretrained(bare)
        load_prm(f"skywork={bare}")


def test_token_classification(tmp_path):
    tok = build_tokenizer()
    torch.manual_seed(3)
    model = LlamaForTokenClassification(LlamaConfig(vocab_size=len(tok), num_labels=2, pad_token_id=tok.pad_token_id, **SMALL)).eval()
    tok = save(model, tok, tmp_path / "tc")
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]

    def direct(q, steps):
        ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + tok(q, add_special_tokens=False)["input_ids"]
        pos = []
        for s in steps:
            ids = ids + tok(s, add_special_tokens=False)["input_ids"] + sep
            pos.append(len(ids) - 1)
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor([ids])).logits[0], -1)[:, 1]
        return [probs[p].item() for p in pos]

    check_batch(load_prm(f"token-classification={tmp_path / 'tc'}", dtype="float32"), direct)
    with pytest.raises(ReasonError, match="^prm: 'token-classification' has no default checkpoint"):
        load_prm("token-classification")


def test_missing_step_tag_and_empty_steps(tmp_path):
    tok = build_tokenizer()  # no "ки" token: it would split into bytes
    model = causal(MistralConfig, tok, sliding_window=None)
    save(model, tok, tmp_path / "ms")
    with pytest.raises(ReasonError, match="^step_tag:"):
        load_prm(f"math-shepherd={tmp_path / 'ms'}")
    tok.add_tokens(["ки"])
    model.resize_token_embeddings(len(tok))
    save(model, tok, tmp_path / "ms2")
    prm = load_prm(f"math-shepherd={tmp_path / 'ms2'}")
    with pytest.raises(ReasonError, match="^steps: is empty"):
        prm.score(Q, [])
