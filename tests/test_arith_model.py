"""The shipped arith policy and value model: they load offline, generate well-formed solutions, and
training is reproducible."""

from __future__ import annotations

import re

import torch

from reason.core.engine.base import Sampling
from reason.core.engine.hf import HFEngine
from tasks.registry import resolve_model
from rewards.catalog import load_value
from tasks.arith.problems import generate
from tasks.arith.solutions import SOLUTION_STOP
from tasks.arith.train import train

LINE = re.compile(r"^(-?\d+[-+*/]-?\d+=-?\d+|answer: -?\d+)$")


def test_shipped_policy_generates_well_formed_solutions():
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    problems = generate(2, 8, seed=5)
    trees = [engine.new_tree(p.prompt) for p in problems]
    for tree in trees:
        [child] = engine.expand(tree, tree.root, 1, SOLUTION_STOP, Sampling(temperature=0))
        assert child.finish_reason == "eos"
        lines = child.text.split("\n")
        assert lines[-1].startswith("answer: ")
        assert all(LINE.match(line) for line in lines), child.text


def test_shipped_value_model_loads_and_scores():
    value = load_value("arith")
    good, bad = value.value_batch([("3+4*5", "4*5=20\n3+20=23\n"), ("3+4*5", "3+4=7\n7*5=36\n")]).values
    assert 0.0 <= bad <= 1.0 and 0.0 <= good <= 1.0


def test_training_is_reproducible():
    a = train(None, steps=3, batch_size=8, hidden=32, layers=1, heads=2, problems=400, seed=7, log_every=0)
    b = train(None, steps=3, batch_size=8, hidden=32, layers=1, heads=2, problems=400, seed=7, log_every=0)
    c = train(None, steps=3, batch_size=8, hidden=32, layers=1, heads=2, problems=400, seed=8, log_every=0)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_value_model_separates_correct_from_wrong_prefixes():
    from tasks.arith.solutions import sample_solutions
    from tasks.arith.train_value import auc, prefixes

    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    data = []
    for level in (2, 3, 4, 5):
        problems = generate(level, 20, seed=99)  # test split: never trained on, by policy or value model
        for rollouts in sample_solutions(engine, problems, 4, 0.8, seed=3):
            for r in rollouts:
                data.extend(prefixes(r))
    labels = [y for *_, y in data]
    assert 0 < sum(labels) < len(labels)
    scores = load_value("arith").value_batch([(q, p) for q, p, _ in data]).values
    assert auc(scores, labels) >= 0.75
