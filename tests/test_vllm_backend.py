"""The ``vllm`` backend. vLLM needs a GPU and is not installed where CI runs: the end-to-end test
skips without it; the parts shared with the ``openai`` backend are checked here either way."""

from __future__ import annotations

import importlib.util

import pytest

from reason.core.engine import load_engine
from reason.core.engine.base import Stop
from reason.core.engine.outputs import finish_reason, first_finished, max_new_tokens
from reason.core.errors import ReasonError
from tasks.registry import resolve_model

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_finish_reasons_follow_the_hf_engine():
    seg = Stop(segment_tokens=8, max_tokens=8)
    assert finish_reason("stop", None, Stop(), 5) == "eos"
    assert finish_reason("stop", "\n\n", Stop(strings=("\n\n",)), 5) == "stop"
    assert finish_reason("stop", 7, Stop(token_ids=(7,)), 5) == "stop"
    assert finish_reason("length", None, seg, 8) == "segment"  # segment wins over max_tokens, as in StopChecker
    assert finish_reason("length", None, Stop(max_tokens=8), 8) == "length"
    assert max_new_tokens(Stop(max_tokens=50, segment_tokens=16), room=100) == 16
    assert max_new_tokens(Stop(), room=100) == 100


def test_first_finished_keeps_ties_of_the_kth():
    assert first_finished([5, 3, 9, 3], 1) == [1, 3]
    assert first_finished([5, 3, 9, 4], 2) == [1, 3]
    assert first_finished([5, 3], None) == [0, 1]


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_missing_vllm_is_a_one_line_error():
    with pytest.raises(ReasonError, match="engine: vllm is not installed"):
        load_engine(resolve_model("arith"), "vllm")


@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (GPU machines only)")
def test_vllm_engine_grows_trees_with_prefix_reuse(tmp_path):
    from reason.core.tiny import save_tiny_checkpoint
    from reason.shortcuts import solve_many

    path = save_tiny_checkpoint(tmp_path / "tiny", "qwen2")
    engine = load_engine(str(path), "vllm", dtype="float32", gpu_memory_utilization=0.3, max_model_len=512)
    results = solve_many(engine, ["1+2*3", "4*5-6"], strategy="best_of_n", budget=4, seed=0, temperature=1.0,
                         select="majority")
    assert all(len(r.tree) > 1 for r in results)
    again = solve_many(engine, ["1+2*3", "4*5-6"], strategy="best_of_n", budget=4, seed=0, temperature=1.0,
                       select="majority")
    assert [[tuple(n.token_ids) for n in r.tree] for r in again] == [[tuple(n.token_ids) for n in r.tree] for r in results]
