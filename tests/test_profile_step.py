"""benchmarks/profile_step.py keeps running (it is the reference for the engine's per-step costs):
a tiny run prints a breakdown whose parts add up to the step's time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_profile_step_prints_a_breakdown_that_adds_up():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--workload", "single",
                          "--tokens", "8", "--repeats", "2"], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    total = float(re.search(r"([\d.]+) us per token in step\(\)", out.stdout).group(1))
    parts = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (\w+) \| ([\d.]+) \|", out.stdout, re.MULTILINE)}
    assert {"forward", "build_batch", "choose", "kv_cache", "other"} <= set(parts)
    assert parts["forward"] > 0 and abs(sum(parts.values()) - total) <= 0.02 * total + 1.0
