"""The shipped arith policy and value model: they load offline, generate well-formed solutions, and
training is reproducible."""

from __future__ import annotations

import re

import pytest
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
    """The shipped value model's scores are its checkpoint's: equal to a forward of the weights read
    straight from the files (every tensor present, head included), on the training text format
    (question, newline, partial solution; one token a character), read at the last token through a
    sigmoid; and they fall with the problem's difficulty."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForTokenClassification

    folder = Path(__file__).resolve().parents[1] / "tasks" / "arith" / "value"
    model = LlamaForTokenClassification(LlamaConfig.from_json_file(folder / "config.json"))
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    model.eval()
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]

    def direct(question: str, partial: str) -> list[float]:
        """The value after every character of ``partial`` (causal: one forward gives them all)."""
        text = f"{question}\n{partial}"
        with torch.inference_mode():
            out = model(torch.tensor([[vocab[c] for c in text]])).logits[0, :, 0]
        return torch.sigmoid(out[len(text) - len(partial) - 1 :]).tolist()

    # Seeded items over levels 1..4: every prefix of the canonical solution, and the solution with
    # its last result off by one.
    items, want, levels = [], [], []
    for level in (1, 2, 3, 4):
        for p in generate(level, 3, seed=123):
            solution = "".join(s + "\n" for s in p.steps)
            along = direct(p.question, solution)
            ends = [0] + [i + 1 for i, c in enumerate(solution) if c == "\n"]
            items += [(p.question, solution[:e]) for e in ends]
            want += [along[e] for e in ends]
            lhs, result = p.steps[-1].split("=")
            wrong = solution[: ends[-2]] + f"{lhs}={int(result) + 1}\n"
            items.append((p.question, wrong))
            want.append(direct(p.question, wrong)[-1])
            levels += [level] * (len(ends) + 1)
    got = load_value("arith").value_batch(items).values  # batches of 16: padding and last-token reads
    assert got == pytest.approx(want, abs=1e-5)
    # What the model learned: the easier the problem, the likelier the policy finishes it correctly.
    means = [sum(v for v, lv in zip(got, levels) if lv == level) / levels.count(level) for level in (1, 2, 3, 4)]
    assert means == sorted(means, reverse=True) and means[0] > 0.5 > means[-1]


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
        problems = generate(level, 10, seed=99)  # test split: never trained on, by policy or value model
        for rollouts in sample_solutions(engine, problems, 2, 0.8, seed=3):
            for r in rollouts:
                data.extend(prefixes(r))
    labels = [y for *_, y in data]
    assert 0 < sum(labels) < len(labels)
    scores = load_value("arith").value_batch([(q, p) for q, p, _ in data]).values
    assert auc(scores, labels) >= 0.75
