"""Every example in examples/ runs as documented."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
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
    if path.stem == "grpo_arith":  # two real GRPO steps with tree rollouts, and the before/after report
        assert "held-out accuracy" in out and "rollout tokens per step" in out
