"""benchmarks/gpu.py keeps running where no GPU is at hand: ``--device cpu --quick`` goes through
every section on small sizes and its identity checks hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_quick_on_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"],
                         check=False, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for section in ("identity", "throughput", "branching", "drafting"):
        assert f"### {section}:" in text
    # Greedy against HF generate, seeded reruns and drafting on/off: every prompt equal.
    for a, b in re.findall(r"\| [^|]+ \| (\d+)/(\d+) \|", text):
        assert a == b
    assert len(re.findall(r"\| [^|]+ \| (\d+)/(\d+) \|", text)) == 3
    assert text.count("| True |") == 3  # drafted trees identical to drafting off
    assert re.search(r"prefix cache: [\d.]+x fewer model tokens", text)
