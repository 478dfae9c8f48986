"""Every example in examples/ runs as documented."""

from __future__ import annotations

import ast
import re
import runpy
import sys
from pathlib import Path

import pytest

# value_iteration.py trains models for many minutes at its defaults; tests/test_value_iteration.py
# runs it with --quick and checks its report.
OWN_TESTS = {"value_iteration"}
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.py") if p.stem not in OWN_TESTS)
# Short settings for examples whose defaults run for minutes.
ARGS = {"grpo_arith": ["--steps", "2", "--held-out", "20"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch, tmp_path):
    args = ARGS.get(path.stem, [])
    if path.stem == "grpo_arith":
        pytest.importorskip("trl")
        args = args + ["--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    {"quickstart": check_quickstart, "grpo_arith": check_grpo_arith, "openrlhf_agent": check_openrlhf_dry_run}[path.stem](out)


def check_quickstart(out: str) -> None:
    """Two trees of 1 + 3 + 3*2 nodes (3 children, each deepened twice, steps of at most 24 tokens),
    each token in a tree generated once, and both problems' requests batched into the same passes."""
    trees = re.findall(r"tree of (\d+) nodes, (\d+) leaves; ledger: (\{.*\})", out)
    assert [(n, leaves) for n, leaves, _ in trees] == [("10", "3")] * 2, out
    ledgers = [ast.literal_eval(ledger) for _, _, ledger in trees]
    for ledger in ledgers:
        assert ledger["unique_tree_tokens"] == ledger["prompt_tokens"] + ledger["generated_tokens"]
        assert 9 <= ledger["generated_tokens"] <= 9 * 24
    passes = int(re.search(r"engine: (\d+) forward passes for both problems together", out).group(1))
    assert passes == max(ledger["forward_passes"] for ledger in ledgers)  # every pass served both trees


def check_grpo_arith(out: str) -> None:
    """Two real GRPO steps with tree rollouts, and the before/after report on 20 held-out problems."""
    assert "steps=2 " in out and "rollout=treepo" in out, out
    acc = re.search(r"held-out accuracy \(20 level-3 problems, .*\): before (\S+) \[(\S+), (\S+)\]  "
                    r"after (\S+) \[(\S+), (\S+)\]", out)
    assert acc, out
    for mean, lo, hi in (map(float, acc.groups()[:3]), map(float, acc.groups()[3:])):
        assert 0 <= lo <= mean <= hi <= 1 and round(mean * 20, 6).is_integer()
    assert int(re.search(r"rollout tokens per step (\d+);", out).group(1)) > 0


TRAJECTORY = re.compile(r"reward (\S+)  tree advantage (\S+)  segments (\d+) \((\d+) tokens\)  ('.*')")
STEP = re.compile(r"\d+[-+*]\d+=-?\d+|answer: -?\d+(<eos>)?")


def check_openrlhf_dry_run(out: str) -> None:
    """One group of 8 trajectories, the leaves of one tree (8-token segments, at most 64 tokens each):
    each reward is whether its answer line is right, each tree advantage has the sign of its reward
    against the group's mean, and the action ranges cover exactly the leaf tokens counted."""
    lines = out.strip().splitlines()
    answer = int(re.fullmatch(r"prompt: .*  answer: (-?\d+)", lines[0]).group(1))
    rows = [TRAJECTORY.fullmatch(line) for line in lines[1:-1]]
    assert len(rows) == 8 and all(rows), out
    rewards = [float(m.group(1)) for m in rows]
    assert set(rewards) == {0.0, 1.0}, out  # a group with something to learn from
    mean = sum(rewards) / len(rewards)
    covered = 0
    for m, reward in zip(rows, rewards):
        advantage, segments, tokens, text = float(m.group(2)), int(m.group(3)), int(m.group(4)), ast.literal_eval(m.group(5))
        steps = text.splitlines()
        assert all(STEP.fullmatch(s) for s in steps), text  # the completion alone, from the first action token
        assert reward == float(int(steps[-1].split(":")[1].removesuffix("<eos>")) == answer), text
        assert (advantage > 0) == (reward > mean) and (advantage < 0) == (reward < mean), m.group(0)
        assert 8 * (segments - 1) < tokens <= min(8 * segments, 64), m.group(0)
        covered += tokens
    summary = re.fullmatch(r"8 trajectories from 1 tree, (\d+) engine requests; generated (\d+) tokens for (\d+) leaf "
                           r"tokens", lines[-1])
    assert summary, lines[-1]
    requests, generated, leaf = map(int, summary.groups())
    assert leaf == covered and 0 < generated <= leaf  # the leaves share their prefixes
    assert requests >= max(int(m.group(3)) for m in rows)  # a round of requests per segment at least
