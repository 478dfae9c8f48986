"""``reason serve`` and the ``openai`` backend, over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from reason.cli import main
from reason.core.engine.base import ExpandRequest, Sampling, Stop
from reason.core.engine.hf import HFEngine
from reason.core.engine.openai import OpenAIEngine
from reason.core.errors import ReasonError
from tasks.registry import resolve_model
from reason.serve import create_app
from reason.serve.thread import ServerThread
from rewards.catalog import load_prm
from reason.shortcuts import solve, solve_many
from tasks.arith.problems import generate

PATH = resolve_model("arith")


def tree_snapshot(result):
    return [(n.id, n.parent.id if n.parent else None, tuple(n.token_ids), n.finish_reason, n.text) for n in result.tree]


def logprob_gap(a, b) -> float:
    """Largest logprob difference between same-id nodes (batch shapes differ, so floats may too)."""
    return max((abs(x - y) for r, g in zip(a, b) for m, n in zip(r.tree, g.tree)
                for x, y in zip(m.logprobs, n.logprobs)), default=0.0)


def exact_part(obj: Any) -> Any:
    """A result's JSON without what may differ between runs of the same search: timings, and the
    logprobs (float sums over other batch shapes; compared with a tolerance instead)."""
    if isinstance(obj, dict):
        return {k: exact_part(v) for k, v in obj.items() if k not in ("wall_seconds", "logprobs")}
    if isinstance(obj, list):
        return [exact_part(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def server():
    engine = HFEngine.from_pretrained(PATH, dtype="float32", device="cpu", cache_tokens=20000)
    with ServerThread(create_app(engine, model_name="arith")) as srv:
        yield srv


@pytest.fixture(scope="module")
def local():
    return HFEngine.from_pretrained(PATH, dtype="float32", device="cpu")


def ledger(server):
    return httpx.get(server.url + "/ledger").json()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_openai_backend_grows_the_same_trees_as_in_process(server, local, temperature):
    client = OpenAIEngine.from_pretrained(PATH, base_url=server.url)
    assert client.model == "arith" and client.max_context == local.max_context
    questions = [p.question for p in generate(3, 4, seed=11)]  # few: every node is compared
    before = ledger(server)
    for strategy, options in (("best_of_n", {"select": "majority"}), ("particle", {"prm": load_prm("arith")}),
                              ("first_finish", {})):
        ref = solve_many(local, questions, strategy=strategy, budget=16, seed=4, temperature=temperature, **options)
        got = solve_many(client, questions, strategy=strategy, budget=16, seed=4, temperature=temperature, **options)
        assert [tree_snapshot(r) for r in got] == [tree_snapshot(r) for r in ref], strategy
        assert [r.answer for r in got] == [r.answer for r in ref]
        assert logprob_gap(got, ref) < 1e-4
    after = ledger(server)
    received = after["prompt_tokens_received"] - before["prompt_tokens_received"]
    reused = after["prompt_tokens_reused"] - before["prompt_tokens_reused"]
    prefilled = after["engine"]["prefill_tokens"] - before["engine"]["prefill_tokens"]
    # Every expansion sends its whole path; nearly all of it is found in the server's trees and cache.
    assert reused / received > 0.9
    assert prefilled < 0.1 * received
    assert after["requests"] == after["completed"]


def test_completions_shapes_and_stop_reasons(server, local):
    body = {"prompt": "7*8-2", "n": 3, "max_tokens": 40, "seed": 7, "logprobs": 1, "stop": ["\n"]}

    def complete(**change: Any) -> list[dict[str, Any]]:
        r = httpx.post(server.url + "/completions", json={**body, **change})
        assert r.status_code == 200, r.text
        return r.json()["choices"]

    def ids_of(choices: list[dict[str, Any]]) -> list[list[int]]:
        return [c["token_ids"] for c in choices]

    out = complete()
    assert [c["index"] for c in out] == [0, 1, 2]
    for c in out:  # each of this seed's samples ends its first line within 40 tokens
        assert c["finish_reason"] == "stop" and c["stop_reason"] == "\n"
        assert "\n" not in c["text"] and "".join(c["logprobs"]["tokens"]) == c["text"] + "\n"  # cut unless asked for
        assert len(c["logprobs"]["token_logprobs"]) == len(c["token_ids"])
    assert ids_of(complete()) == ids_of(out)  # seeded
    assert ids_of(complete(seed=8)) != ids_of(out)  # and the seed is used
    prompt_ids = local.tokenize_prompt("7*8-2")[0]
    assert ids_of(complete(prompt=prompt_ids)) == ids_of(out)  # a token-id prompt is that text
    multi = complete(n=2, prompt=["1+2", "3*4"])
    assert [c["index"] for c in multi] == [0, 1, 2, 3]
    assert ids_of(multi) == ids_of(complete(n=2, prompt="1+2")) + ids_of(complete(n=2, prompt="3*4"))
    messages = [{"role": "user", "content": "2+3*4"}]
    chat = httpx.post(server.url + "/chat/completions", json={"messages": messages, "max_tokens": 60, "seed": 1}).json()
    same = complete(prompt=local.tokenize_prompt(messages)[0], n=1, max_tokens=60, seed=1, stop=None, logprobs=None)
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": same[0]["text"]}
    assert ids_of(chat["choices"]) == ids_of(same) and same[0]["finish_reason"] == "stop"
    assert httpx.get(server.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}


def test_vllm_stop_options_have_their_effect(server, local):
    """include_stop_str_in_output, ignore_eos and stop_token_ids, each against the same greedy request
    without it."""

    def complete(**options: Any) -> dict[str, Any]:
        body = {"prompt": "12+3*4-5", "max_tokens": 60, "temperature": 0, **options}
        r = httpx.post(server.url + "/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    plain = complete()
    eos = local.tokenizer.eos_token_id
    assert plain["finish_reason"] == "stop" and plain["token_ids"][-1] == eos and len(plain["token_ids"]) < 60

    cut, kept = complete(stop=["*"]), complete(stop=["*"], include_stop_str_in_output=True)
    assert cut["token_ids"] == kept["token_ids"] and cut["stop_reason"] == kept["stop_reason"] == "*"
    assert "*" not in cut["text"] and kept["text"] == cut["text"] + "*"

    on = complete(ignore_eos=True)
    assert on["finish_reason"] == "length" and len(on["token_ids"]) == 60  # ran on past the EOS
    assert on["token_ids"][: len(plain["token_ids"])] == plain["token_ids"]

    token = plain["token_ids"][len(plain["token_ids"]) // 2]
    at = plain["token_ids"].index(token)  # its first occurrence: where the request must stop
    stopped = complete(stop_token_ids=[token])
    assert stopped["token_ids"] == plain["token_ids"][: at + 1] and at + 1 < len(plain["token_ids"])
    assert stopped["finish_reason"] == "stop" and stopped["stop_reason"] == token and plain["stop_reason"] is None


def test_solve_endpoint_runs_a_strategy(server, local):
    """/v1/solve returns what an in-process solve returns (tree, candidates, ledger), options included."""
    prm = load_prm("arith")
    base = {"question": "12+3*4-5", "strategy": "particle", "budget": 8, "seed": 3, "prm": "arith", "include_tree": True}
    trees = []
    for options in ({}, {"temperature": 1.5, "resampling": "multinomial"}):
        out = httpx.post(server.url + "/solve", json={**base, "options": options}, timeout=120).json()
        assert "/v1/views/" in out.pop("view_url")  # the tree's page (tests/test_viewer_serve.py)
        ref = solve(local, "12+3*4-5", strategy="particle", budget=8, seed=3, prm=prm, **options)
        want = ref.to_json_dict(include_tree=True)
        assert exact_part(out) == exact_part(want), options
        assert len(out["candidates"]) > 0 and len(out["tree"]["nodes"]) == len(ref.tree)
        gaps = [abs(x - y) for m, n in zip(out["tree"]["nodes"], want["tree"]["nodes"])
                for x, y in zip(m["logprobs"], n["logprobs"])]
        assert gaps and max(gaps) < 1e-4
        trees.append(exact_part(out["tree"]["nodes"]))
    assert trees[0] != trees[1]  # the options changed the search, so dropping them would show above


@pytest.mark.parametrize("payload, status, needle", [
    ('{"prompt": "1+1", ', 400, "malformed JSON"),
    ('{"prompt": "1+1", "min_p": 2}', 400, "min_p: "),
    ('{"prompt": "1+1", "n": 0}', 400, "n: "),
    ('{"prompt": "1+1", "max_tokens": 100000000}', 400, "max_tokens: 100000000"),
    ('{"prompt": [' + ",".join(["5"] * 300) + "]}", 400, "prompt: 300 tokens fill the model's context"),
    ('{"prompt": [99999]}', 400, "token id 99999 is outside the vocabulary"),
    ('{"prompt": "1+1", "logprobs": 5}', 400, "logprobs"),
    ('{"prompt": "1+1", "stream": true}', 400, "stream"),
    ('{"n": 2}', 400, "prompt: required"),
    ('[1, 2]', 400, "body"),
])
def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(server, payload, status, needle):
    r = httpx.post(server.url + "/completions", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    ok = httpx.post(server.url + "/completions", json={"prompt": "1+1", "max_tokens": 4})
    assert ok.status_code == 200


def test_bad_solve_requests(server):
    for body, needle in (({"question": "1+2", "strategy": "nope"}, "strategy"),
                         ({"question": "1+2", "options": {"bogus": 1}}, "bogus"),
                         ({"question": "1+2", "strategy": "mcts", "options": {"c_puct": "x"}}, "c_puct:"),
                         ({"question": "1+2", "options": {"temperature": -1}}, "temperature:"),
                         ({"question": "1+2", "budget": 0}, "budget")):
        r = httpx.post(server.url + "/solve", json=body)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_api_key_is_required_when_configured(local):
    with ServerThread(create_app(local, model_name="arith", api_key="sesame")) as srv:
        r = httpx.get(srv.url + "/models")
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(srv.url + "/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
        with pytest.raises(ReasonError, match="401"):
            OpenAIEngine.from_pretrained(PATH, base_url=srv.url, retries=0)
        client = OpenAIEngine.from_pretrained(PATH, base_url=srv.url, api_key="sesame")
        tree = client.new_tree("1+2")
        assert client.expand(tree, tree.root, 2, Stop(max_tokens=5), Sampling(seed=1))


def test_client_reports_an_unreachable_server_after_retries():
    tok = HFEngine.from_pretrained(PATH, dtype="float32", device="cpu").tokenizer
    with ServerThread(FastAPI()) as srv:
        url = srv.url
    client = OpenAIEngine(url, tok, model="arith", max_context=256, retries=2, backoff=0.01)
    tree = client.new_tree("1+2")
    with pytest.raises(ReasonError, match=r"base_url: .* failed after 3 attempts"):
        client.expand_many([ExpandRequest(tree, tree.root, 1, Stop(max_tokens=4))])


def test_client_reports_a_server_without_token_ids():
    """A fake server that answers like a plain OpenAI endpoint (text only)."""
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"data": [{"id": "m", "max_model_len": 256}]}

    @app.post("/v1/completions")
    def completions():
        return {"choices": [{"index": 0, "text": "42", "finish_reason": "stop", "logprobs": {"tokens": ["42"]}}]}

    tok = HFEngine.from_pretrained(PATH, dtype="float32", device="cpu").tokenizer
    with ServerThread(app) as srv:
        client = OpenAIEngine(srv.url, tok)
        tree = client.new_tree("1+2")
        with pytest.raises(ReasonError, match="returned no token ids"):
            client.expand(tree, tree.root, 1, Stop(max_tokens=4))


def test_concurrent_clients_lose_and_duplicate_nothing(server, local):
    """Twelve clients at once, each with its own question and seed, each gets exactly its own search:
    the tree an in-process solve of that question and seed grows."""
    questions = [f"{i}+{i}*2" for i in range(12)]
    ref = solve_many(local, questions, strategy="best_of_n", budget=4, seed=0, select="majority")  # i-th: seed i
    before = ledger(server)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            client = OpenAIEngine.from_pretrained(PATH, base_url=server.url)
            results[i] = solve_many(client, [questions[i]], strategy="best_of_n", budget=4, seed=i,
                                    select="majority")
        except BaseException as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(12))
    for i, (got,) in sorted(results.items()):
        assert tree_snapshot(got) == tree_snapshot(ref[i]), i
        assert got.candidates == ref[i].candidates and sum(c.count for c in got.candidates) == 4
    after = ledger(server)
    assert after["requests"] - before["requests"] == after["completed"] - before["completed"] >= 12


def test_cli_engine_openai_and_serve_errors(server):
    r = CliRunner().invoke(main, ["generate", "1+2", "-n", "3", "--seed", "2", "--json", "--engine", "openai",
                                  "--base-url", server.url])
    assert r.exit_code == 0, r.output
    remote = json.loads(r.output)["samples"]
    r = CliRunner().invoke(main, ["generate", "1+2", "-n", "3", "--seed", "2", "--json"])
    assert [s["token_ids"] for s in remote] == [s["token_ids"] for s in json.loads(r.output)["samples"]]
    r = CliRunner().invoke(main, ["solve", "1+2", "--engine", "openai"])
    assert r.exit_code == 2 and "base-url: is required" in r.output
    r = CliRunner().invoke(main, ["solve", "1+2", "--base-url", server.url])
    assert r.exit_code == 2 and "applies to --engine openai only" in r.output
    r = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert r.exit_code == 2 and "port" in r.output


def test_serve_binds_to_localhost_by_default():
    host = next(p for p in main.commands["serve"].params if p.name == "host")
    assert host.default == "127.0.0.1"
