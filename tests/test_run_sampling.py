"""A run's sampling filters and penalties (``sampling=`` / ``--top-p``, ``--top-k``, ``--min-p``, the
penalties on ``reason solve`` and ``reason eval``): every draw of every strategy takes them, while
the strategy keeps choosing its temperature."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from reason.cli import main
from reason.core.engine.base import Sampling
from reason.core.errors import ReasonError
from reason.shortcuts import solve
from rewards.catalog import load_prm
from tasks.evaluation import EvalConfig

QUESTION = "((23+20)*5-17)*3"


def test_under_fills_only_what_a_request_leaves_off():
    run = Sampling(top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.2, temperature=0.3, seed=7)
    mine = Sampling(temperature=0.8, top_k=40).under(run)
    assert (mine.top_k, mine.top_p, mine.min_p, mine.repetition_penalty) == (40, 0.9, 0.1, 1.2)
    assert (mine.temperature, mine.seed) == (0.8, None)  # never the run's
    plain = Sampling(temperature=0.5)
    assert plain.under(None) is plain and plain.under(Sampling()) is plain


@pytest.mark.parametrize("strategy", ["best_of_n", "particle"])
def test_top_k_1_makes_every_draw_the_greedy_one(engine, strategy):
    """With top-k 1 for the run, temperature-1 sampling can only draw the argmax: every sample of
    the search is the greedy solution, so the merged tree holds one path."""
    greedy = solve(engine, QUESTION, strategy="greedy")
    options = {"select": "majority"} if strategy == "best_of_n" else {"prm": load_prm("arith")}
    result = solve(engine, QUESTION, strategy=strategy, budget=6, temperature=1.0, sampling={"top_k": 1}, seed=4,
                   **options)
    assert result.text == greedy.text
    assert all(len(n.children) <= 1 for n in result.tree)
    free = solve(engine, QUESTION, strategy=strategy, budget=6, temperature=1.0, seed=4, **options)
    assert any(len(n.children) > 1 for n in free.tree)  # without it the same search branches


def test_bad_run_sampling_is_one_line():
    with pytest.raises(ReasonError, match=r"^sampling\.temperature:"):
        solve(None, QUESTION, sampling={"temperature": 0.5})
    with pytest.raises(ReasonError, match=r"^sampling\.top_p:"):
        solve(None, QUESTION, sampling={"top_p": 0})
    for args, field in ((["solve", QUESTION, "--top-p", "0"], "top_p"), (["eval", "--suite", "arith:3", "--min-p", "2"], "min_p")):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and res.output.startswith(f"error: {field}:") and len(res.output.strip().splitlines()) == 1


def test_cli_solve_takes_the_filters(engine):
    res = CliRunner().invoke(main, ["solve", QUESTION, "--strategy", "best_of_n", "--budget", "4", "--select", "majority",
                                    "-t", "1.0", "--top-k", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["candidates"]) == 1 and data["candidates"][0]["count"] == 4


def test_eval_config_digest_counts_sampling_only_when_set():
    base = EvalConfig(suite="arith:3", strategy="best_of_n", model="arith")
    assert EvalConfig(suite="arith:3", strategy="best_of_n", model="arith", sampling={}).digest() == base.digest()
    assert "sampling" not in base.model_dump(exclude_defaults=True)
    assert EvalConfig(suite="arith:3", strategy="best_of_n", model="arith", sampling={"top_k": 3}).digest() != base.digest()


def test_v1_solve_takes_the_run_sampling(engine):
    import httpx

    from reason.serve import create_app
    from reason.serve.thread import ServerThread

    with ServerThread(create_app(engine, model_name="arith")) as srv:
        body = {"question": QUESTION, "strategy": "best_of_n", "budget": 4, "options": {"select": "majority"},
                "sampling": {"top_k": 1}}
        reply = httpx.post(srv.url + "/solve", json=body, timeout=120).json()
        assert len(reply["candidates"]) == 1 and reply["candidates"][0]["count"] == 4
        bad = httpx.post(srv.url + "/solve", json={**body, "sampling": {"temperature": 0.2}}, timeout=60)
        assert bad.status_code == 400 and "sampling.temperature" in bad.text


@pytest.mark.parametrize("strategy", ["treepo", "best_of_n"])
def test_rollouts_take_the_run_sampling(engine, strategy):
    import reason

    options = {"select": "majority"} if strategy == "best_of_n" else {}
    distinct = []
    for extra in ({"sampling": {"top_k": 1}}, {}):
        records = reason.rollout(engine, ["12+3*4-5\n"], n=4, seed=1, strategy=strategy, reward=lambda i, t: 0.0,
                                 max_tokens=40, **options, **extra)
        assert len(records) == 4
        distinct.append(len({tuple(r.completion_ids) for r in records}))
    assert distinct[0] == 1 and distinct[1] > 1
