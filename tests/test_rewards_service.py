"""PRMs and value models as a service (issue 22, part 3): ``/v1/rewards`` on ``reason serve``, the
HTTP scorer client (``--prm NAME=URL``), and vLLM's pooling API shape for a served Qwen PRM."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import torch
from click.testing import CliRunner
from fastapi import FastAPI

from reason.cli import main
from reason.core.errors import ReasonError
from reason.core.tree import Tree
from reason.serve import create_app
from reason.serve.rewards import ScoreBatcher
from reason.serve.thread import ServerThread
from reason.shortcuts import solve
from rewards.base import ProcessRewardModel, StepScores
from rewards.catalog import load_prm, load_value
from rewards.prm.pooling import PoolingPRM, step_scores
from rewards.remote import ServedPRM, ServedValue
from rewards.scoring import NodeScorer, NodeValuer
from tasks.arith.problems import generate
from test_scoring import QUESTION, SOLUTIONS, tiny_qwen_prm

ITEMS = [("12+3*4", ["3*4=12", "12+12=24", "answer: 24"]), ("12+3*4", ["12+3=15", "15*4=60"]),
         ("(7-2)*3", ["7-2=5", "5*3=15", "answer: 15"])]


@pytest.fixture(scope="module")
def local():
    return {"prm": load_prm("arith"), "value": load_value("arith")}


@pytest.fixture(scope="module")
def served(engine, local):
    app = create_app(engine, model_name="arith", prms={"arith": local["prm"]}, values={"arith": local["value"]})
    with ServerThread(app) as srv:
        yield srv, app


def test_listing_names_the_started_scorers(served):
    srv, _ = served
    listing = httpx.get(srv.url + "/rewards").json()
    assert [(e["id"], e["task"]) for e in listing["data"]] == [("arith", "prm"), ("arith", "value")]
    assert listing["data"][0]["incremental"] is True and listing["max_items"] > 0


def test_prm_scores_over_http_equal_in_process(served, local):
    srv, _ = served
    remote = load_prm(f"arith={srv.url}")
    assert isinstance(remote, ServedPRM) and remote.incremental
    got, want = remote.score_batch(ITEMS), local["prm"].score_batch(ITEMS)
    assert got.scores == want.scores
    assert [len(s) for s in got.scores] == [3, 2, 3] and got.scores[1] == [0.0, 0.0]


def test_value_scores_over_http_equal_in_process(served, local):
    srv, _ = served
    remote = load_value(f"arith={srv.url}")
    assert isinstance(remote, ServedValue)
    items = [(p.question, "\n".join(p.solution.splitlines()[:k])) for p in generate(3, 6, seed=5) for k in (1, 2)]
    got, want = remote.value_batch(items), local["value"].value_batch(items)
    assert len(got.values) == len(items)
    assert got.values == pytest.approx(want.values, abs=1e-4)
    assert got.tokens == want.tokens > 0


def test_a_search_through_the_service_equals_the_in_process_search(served, engine, local):
    srv, _ = served
    remote = load_prm(f"arith={srv.url}")
    question = generate(3, 1, seed=21)[0].question
    here = solve(engine, question, strategy="beam", budget=4, prm=local["prm"], seed=3)
    there = solve(engine, question, strategy="beam", budget=4, prm=remote, seed=3)
    assert there.answer == here.answer
    assert [(c.answer, c.score) for c in there.candidates] == [(c.answer, c.score) for c in here.candidates]
    assert there.ledger.prm_calls == here.ledger.prm_calls > 0  # per-node caching holds: same items scored
    assert remote.client.requests == there.ledger.prm_batches  # one HTTP request per scorer batch


def test_per_node_caching_sends_each_node_once(served):
    srv, _ = served
    remote = load_prm(f"arith={srv.url}")
    scorer = NodeScorer(remote, delimiter="\n")
    tree = Tree([1], "12+3*4\n")
    a = tree.add_child(tree.root, [2], text="3*4=12\n")
    b = tree.add_child(a, [3], text="12+12=24\n")
    c = tree.add_child(b, [4], text="answer: 24")
    assert scorer.score(tree, [a, b, c]) == [1.0, 1.0, 1.0]
    assert remote.client.requests == 1 and tree.ledger.prm_calls == 1  # one item: a and b read c's prefix
    assert scorer.score(tree, [c, b]) == [1.0, 1.0]
    assert remote.client.requests == 1  # cached on the nodes: nothing sent


def test_value_caching_holds_through_the_service(served):
    srv, _ = served
    remote = load_value(f"arith={srv.url}")
    valuer = NodeValuer(remote)
    tree = Tree([1], "12+3*4\n")
    a = tree.add_child(tree.root, [2], text="3*4=12\n")
    first = valuer.value(tree, [a, tree.root])
    assert valuer.value(tree, [a]) == [first[0]] and remote.client.requests == 1


def test_unknown_scorer_and_wrong_items_are_one_line_errors(served):
    srv, _ = served
    with pytest.raises(ReasonError, match=r"offers no prm 'qwen' \(it offers: arith\)"):
        load_prm(f"qwen={srv.url}")
    bad = httpx.post(srv.url + "/rewards", json={"model": "arith", "task": "prm", "items": [{"question": "1+2", "partial": "x"}]})
    assert bad.status_code == 400 and "items.0" in bad.json()["error"]["message"]
    none = httpx.post(srv.url + "/rewards", json={"model": "lm", "task": "value", "items": [{"question": "q", "partial": ""}]})
    assert none.status_code == 400 and "it offers: arith" in none.json()["error"]["message"]


def test_the_endpoint_sits_behind_the_api_key(engine, local):
    app = create_app(engine, model_name="arith", api_key="sesame", prms={"arith": local["prm"]})
    with ServerThread(app) as srv:
        with pytest.raises(ReasonError, match="401"):
            load_prm(f"arith={srv.url}", api_key="wrong")
        remote = load_prm(f"arith={srv.url}", api_key="sesame")
        assert remote.score_batch(ITEMS[:1]).scores == [[1.0, 1.0, 1.0]]


class _GatedPRM(ProcessRewardModel):
    """Scores every step 0.5 once ``gate`` opens, counting its calls (the batcher's first job holds it)."""

    def __init__(self) -> None:
        self.gate, self.entered, self.calls = threading.Event(), threading.Event(), []

    def score_batch(self, items):
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(len(items))
        return StepScores([[0.5] * len(s) for _, s in items], tokens=10 * len(items))


def test_requests_waiting_on_the_batcher_share_one_model_call():
    prm, batcher = _GatedPRM(), ScoreBatcher()
    try:
        first = batcher.submit(prm, "prm", [("q", ["a"])])
        assert prm.entered.wait(10)
        waiting = [batcher.submit(prm, "prm", [("q", ["a"] * k)]) for k in (1, 2, 3)]
        prm.gate.set()
        rows = [f.result(10) for f in waiting]
        assert first.result(10) == ([[0.5]], 10)
        assert prm.calls == [1, 3] and batcher.calls == 2  # the three waiting requests: one call
        assert [r[0] for r in rows] == [[[0.5]], [[0.5, 0.5]], [[0.5] * 3]] and [r[1] for r in rows] == [10, 10, 10]
    finally:
        batcher.close()


# -- vLLM's pooling API: a stand-in server answering in vLLM's documented shape ----------------------


def pooling_app(model, tok, *, step_rows: bool, activation: bool) -> FastAPI:
    """``GET /v1/models`` and ``POST /pooling`` as ``vllm serve`` of a token_classify PRM answers them:
    rows per step tag (STEP pooling) or per token (ALL), probabilities or logits."""
    app = FastAPI()
    tag = tok.convert_tokens_to_ids("<extra_0>")
    app.state.bodies = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "tiny-qwen-prm", "object": "model", "owned_by": "vllm"}]}

    @app.post("/pooling")
    async def pool(body: dict):
        app.state.bodies.append(body)
        data = []
        for i, ids in enumerate(body["input"]):
            with torch.no_grad():
                out = model(torch.tensor([ids]))[0].float()
            rows = torch.softmax(out, -1) if activation else out
            if step_rows:
                rows = rows[torch.tensor(ids) == tag]
            data.append({"index": i, "object": "pooling", "data": rows.tolist()})
        n = sum(len(x) for x in body["input"])
        return {"id": "pool-1", "object": "list", "model": body["model"], "data": data,
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    return app


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-prm")
    model, tok = tiny_qwen_prm(path)
    return path, model, tok


@pytest.mark.parametrize("step_rows, activation", [(True, True), (False, False)])
def test_pooling_client_scores_equal_the_in_process_qwen_prm(qwen, step_rows, activation):
    path, model, tok = qwen
    here = load_prm(f"qwen={path}", dtype="float32", device="cpu")
    app = pooling_app(model, tok, step_rows=step_rows, activation=activation)
    with ServerThread(app) as srv:
        remote = load_prm(f"qwen={srv.url}", tokenizer=str(path))
        assert isinstance(remote, PoolingPRM)
        got = remote.score_batch([(QUESTION, s) for s in SOLUTIONS])
        want = here.score_batch([(QUESTION, s) for s in SOLUTIONS])
    body = app.state.bodies[0]
    assert body["task"] == "token_classify" and body["model"] == "tiny-qwen-prm" and len(body["input"]) == 3
    assert [len(s) for s in got.scores] == [3, 1, 2] and got.tokens == want.tokens
    for g, w in zip(got.scores, want.scores):
        assert g == pytest.approx(w, abs=1e-4)


def test_pooling_rows_that_fit_neither_shape_are_refused():
    assert step_scores([[0.2, 0.8]], 5, [4], label=1) == [0.8]
    assert step_scores([[0.0, 0.0]] * 4 + [[0.1, 0.9]], 5, [4], label=1) == [0.9]
    with pytest.raises(ReasonError, match="3 rows for 5 tokens and 1 steps"):
        step_scores([[0.5, 0.5]] * 3, 5, [4], label=1)


def test_the_command_line_scores_through_a_served_prm(served):
    srv, _ = served
    args = ["solve", "12+3*4-5", "--strategy", "best_of_n", "--budget", "4", "--seed", "2", "--json"]
    here = CliRunner().invoke(main, [*args, "--prm", "arith"])
    there = CliRunner().invoke(main, [*args, "--prm", f"arith={srv.url}"])
    assert here.exit_code == 0 and there.exit_code == 0, there.output

    def kept(out: str) -> dict:
        return {k: v for k, v in json.loads(out).items() if k not in ("ledger", "wall_seconds")}

    assert kept(there.output) == kept(here.output)


def test_an_unreachable_scoring_server_is_a_one_line_error():
    with pytest.raises(ReasonError, match=r"^prm: http://127.0.0.1:9/v1/rewards failed after 1 attempts"):
        load_prm("arith=http://127.0.0.1:9/v1", retries=0)


def test_a_vllm_prm_without_vllm_is_a_one_line_error(qwen):
    path, _, _ = qwen
    with pytest.raises(ReasonError, match="vllm is not installed"):
        load_prm(f"qwen={path}", backend="vllm")


class _WatchedPRM(ProcessRewardModel):
    """The arith PRM, recording which thread called it and whether two calls ever overlapped."""

    name = "watched"

    def __init__(self, inner: ProcessRewardModel) -> None:
        self.inner, self.threads, self.busy, self.overlaps = inner, set(), threading.Lock(), 0

    def score_batch(self, items):
        self.threads.add(threading.current_thread().name)
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()
        try:
            torch.randn(256, 256) @ torch.randn(256, 256)  # long enough for concurrent callers to meet here
            return self.inner.score_batch(items)
        finally:
            self.busy.release()


def test_concurrent_solves_score_in_the_scoring_thread_only(engine, local):
    """Searches run in request threads; their scorer calls all go to the one scoring thread, so no
    scorer is ever called twice at once, and the answers equal in-process searches'."""
    watched = _WatchedPRM(local["prm"])
    app = create_app(engine, model_name="arith", prms={"arith": watched})
    questions = [p.question for p in generate(3, 6, seed=8)]
    out: dict[int, dict] = {}
    with ServerThread(app) as srv:
        def ask(i: int) -> None:
            body = {"question": questions[i], "strategy": "beam", "budget": 4, "prm": "arith", "seed": 1}
            out[i] = httpx.post(srv.url + "/solve", json=body, timeout=300).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert watched.threads == {"reason-rewards"} and watched.overlaps == 0
    for i, q in enumerate(questions):
        here = solve(engine, q, strategy="beam", budget=4, prm=local["prm"], seed=1)
        assert out[i]["answer"] == here.answer and out[i]["text"] == here.text
        assert [c["score"] for c in out[i]["candidates"]] == [c.score for c in here.candidates]
