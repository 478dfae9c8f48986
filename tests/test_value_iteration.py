"""examples/value_iteration.py --quick: one round of search, targets, training and held-out search
runs end to end, writes loadable checkpoints, its trees and the per-round table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.catalog import load_prm, load_value
from rewards.learn.trees import read_trees

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_iteration(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "value_iteration.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"round"')]
    assert [r["round"] for r in rows] == [0, 1]
    assert all(0.0 <= float(r["AUC"]) <= 1.0 for r in rows)
    assert "best-of-N n=4" in rows[1] and "majority n=4" in rows[1] and "particle n=4" in rows[1]
    assert rows[0]["MCTS rollout n=4"] == rows[1]["MCTS rollout n=4"]  # the fixed baseline runs once
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.startswith("| round | AUC |") and table.count("\n") >= 4
    trees = read_trees([out / "trees_round1.jsonl"])
    assert len(trees) == 12 and all(t.meta["answer"] for t in trees)
    value = load_value(f"lm={out / 'value_round1'}", dtype="float32")
    assert 0.0 <= value.value("2+3*4", "3*4=12\n") <= 1.0
    prm = load_prm(f"token-classification={out / 'prm_round1'}", dtype="float32")
    assert len(prm.score("2+3*4", ["3*4=12", "2+12=14"])) == 2
