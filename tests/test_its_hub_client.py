"""its_hub's OpenAI-compatible client, unchanged, against ``reason serve`` (skipped where its_hub is
not installed; it is not a dependency: ``pip install "its-hub[lm]"``). benchmarks/its_hub_client.py
runs its search algorithms end to end."""

from __future__ import annotations

import asyncio
import logging

import pytest

from reason.core.engine.hf import HFEngine
from reason.serve import create_app
from reason.serve.thread import ServerThread
from tasks.arith.scorers import final_answer
from tasks.registry import resolve_model

openai_lm = pytest.importorskip("its_hub.core.lms.openai_lm")


def test_its_hub_generates_continues_and_votes_through_reason_serve(caplog):
    from its_hub.core.algorithms.self_consistency import SelfConsistency

    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    app = create_app(engine, model_name="arith")
    with ServerThread(app) as srv, caplog.at_level(logging.WARNING, logger="reason.serve"):
        lm = openai_lm.OpenAICompatibleLanguageModel(endpoint=srv.url, api_key="none", model_name="arith",
                                                     max_completion_tokens=48, temperature=0.0)
        whole = asyncio.run(lm.agenerate_single([{"role": "user", "content": "12+3*4"}]))
        assert final_answer(whole["content"]) == 24
        first_step = whole["content"].split("\n")[0]
        # its_hub's step-wise generation: the partial assistant message is continued, not restarted
        rest = asyncio.run(lm.agenerate_single([{"role": "user", "content": "12+3*4"},
                                                {"role": "assistant", "content": first_step}]))
        assert not rest["content"].startswith(first_step) and final_answer(rest["content"]) == 24
        out = SelfConsistency(consistency_space_projection_func=final_answer).infer(lm, "12+3*4", 4)
        assert final_answer(out["content"]) == 24
    assert app.state.server.worker.requests >= 6
    assert any("extra_body" in r.getMessage() for r in caplog.records)  # its_hub's raw extra_body: ignored, logged
