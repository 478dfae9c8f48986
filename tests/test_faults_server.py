"""Fault injection against ``reason serve`` (issue 19): hostile and careless requests get the
documented 4xx with the OpenAI-shaped error body, never a 500, and the server then still answers a
normal completion token for token as before; scorers come only from the start-up allow-list; the
docs pages are off behind a key; a 50 MB body is refused in under a second without the server's
memory growing (a real ``reason serve`` process)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from reason.cli import main
from reason.cli.serve import load_scorers
from reason.core.errors import ReasonError
from reason.serve import create_app
from reason.serve.limits import MAX_BODY_BYTES, ServerLimits
from reason.serve.thread import ServerThread
from rewards.catalog import load_prm
from test_serve_process import free_port, spawn_server, stop_server, wait_ready

COMPLETIONS, CHAT, SOLVE = "/v1/completions", "/v1/chat/completions", "/v1/solve"
# Small limits, so every cap is reached with small requests (and their configurability is tested).
LIMITS = ServerLimits(body_bytes=100_000, prompt_chars=20_000, prompts=4, choices=16, budget=64, budget_tokens=5_000)
NORMAL = {"prompt": "12+3*4-5", "max_tokens": 16, "temperature": 0}


@pytest.fixture(scope="module")
def client(engine):
    app = create_app(engine, model_name="arith", limits=LIMITS,
                     prms={"arith": load_prm("arith"), "exact": load_prm("arith")})
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def normal(client) -> list[int]:
    """The token ids of a greedy completion before any fault."""
    r = client.post(COMPLETIONS, json=NORMAL)
    assert r.status_code == 200, r.text
    ids = r.json()["choices"][0]["token_ids"]
    assert ids
    return ids


def post(client: TestClient, path: str, body: Any) -> httpx.Response:
    """POST ``body``: a dict as JSON, str/bytes as they are (to send what ``json`` cannot)."""
    content = json.dumps(body) if isinstance(body, dict) else body
    return client.post(path, content=content, headers={"content-type": "application/json"})


def assert_error(r: httpx.Response, status: int, needle: str) -> dict[str, Any]:
    """The documented status and the project's one-line error body, with ``needle`` in its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert err["code"] == status and err["type"] == "invalid_request_error", err
    assert needle in err["message"], err["message"]
    assert "\n" not in err["message"] and "Traceback" not in r.text
    return err


def assert_serving(client: TestClient, normal: list[int]) -> None:
    r = client.post(COMPLETIONS, json=NORMAL)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["token_ids"] == normal


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


COMPLETION_PROBES = [
    ({"n": True}, 400, "n: Input should be a valid integer (got True)"),
    ({"n": "2"}, 400, "n: Input should be a valid integer"),
    ({"n": 2.0}, 400, "n: Input should be a valid integer"),
    ({"n": 257}, 400, "n: Input should be less than or equal to 256"),
    ({"max_tokens": 4.0}, 400, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": True}, 400, "max_tokens: Input should be a valid integer"),
    ({"seed": "1"}, 400, "seed: Input should be a valid integer"),
    ({"temperature": "0.5"}, 400, "temperature: Input should be a valid number"),
    ({"temperature": True}, 400, "temperature: Input should be a valid number"),
    ({"temperature": -1}, 400, "temperature: Input should be greater than or equal to 0"),
    ({"temperature": 1e-300}, 400, "temperature: is over 0 and under 1e-05"),
    ({"ignore_eos": "yes"}, 400, "ignore_eos: Input should be a valid boolean"),
    ({"logprobs": True}, 400, "logprobs: Input should be a valid integer"),
    ({"stop": ""}, 400, "stop: String should have at least 1 character"),
    ({"stop": [""]}, 400, "stop.0: String should have at least 1 character"),
    ({"stop": ["x", ""]}, 400, "stop.1: String should have at least 1 character"),
    ({"stop": ["x"] * 65}, 400, "stop: List should have at most 64 items"),
    ({"stop_token_ids": [-1]}, 400, "stop_token_ids.0: Input should be greater than or equal to 0"),
    ({"stop_token_ids": [True]}, 400, "stop_token_ids.0: Input should be a valid integer"),
    ({"prompt": [1, True]}, 400, "prompt.1: Input should be a valid integer (got True)"),
    ({"prompt": [2**70]}, 400, "is outside the vocabulary"),
    ({"prompt": ["1+1"] * 5}, 400, "prompt: 5 prompts are over this server's limit of 4; send at most 4 "
                                    "(the server's --max-prompts)"),
    ({"prompt": ["1+1", "2+2"], "n": 9}, 400, "n: 18 choices (prompts x n) are over this server's limit of 16"),
    ({"prompt": "1" * 20_001}, 400, "prompt: 20001 characters are over this server's limit of 20000"),
    ({"prompt": "1+" * 5000 + "1"}, 400, "over the model's context (256)"),  # refused after a prefix
    ('{"prompt": "1+1", "temperature": NaN}', 400, "temperature: Input should be a finite number"),
    ('{"prompt": "1+1", "temperature": -Infinity}', 400, "temperature: Input should be a finite number"),
    ('{"prompt": "1+1", "top_p": Infinity}', 400, "top_p: Input should be a finite number"),
    ('{"prompt": "1+1", "n": 1e400}', 400, "n: Input should be a valid integer"),
    ('{"prompt": "1+1", "n": 1' + "0" * 4300 + "}", 400, "body: cannot be read as JSON (ValueError"),
    ('{"prompt": ' + _nested(5000) + "}", 400, "body: cannot be read as JSON (RecursionError"),
    (b'{"prompt": "\xff\xfe"}', 400, "body: cannot be read as JSON (UnicodeDecodeError"),
    ('{"prompt": "1+1", ', 400, "body: malformed JSON"),
    ("[1, 2]", 400, "body"),
]


@pytest.mark.parametrize("body, status, needle", COMPLETION_PROBES, ids=lambda x: str(x)[:40])
def test_bad_completion_requests(client, normal, body, status, needle):
    if isinstance(body, dict):
        body = {**NORMAL, **body}
    assert_error(post(client, COMPLETIONS, body), status, needle)
    assert_serving(client, normal)


CHAT_PROBES = [
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content: Input should be a valid string"),
    ({"messages": []}, "messages: List should have at least 1 item"),
    ({"messages": [{"role": "user", "content": "1+1"}], "n": True}, "n: Input should be a valid integer"),
    ({"messages": [{"role": "user", "content": "1+1"}], "stop": [""]}, "stop.0: String should have at least"),
    ({"messages": [{"role": "user", "content": "1" * 19_998}]},
     "messages: 20002 characters are over this server's limit of 20000"),
]


@pytest.mark.parametrize("body, needle", CHAT_PROBES, ids=lambda x: str(x)[:40])
def test_bad_chat_requests(client, normal, body, needle):
    assert_error(post(client, CHAT, body), 400, needle)
    assert_serving(client, normal)


SOLVE_PROBES = [
    ({"options": {"temperature": -1}}, "temperature: Input should be greater than or equal to 0"),
    ({"options": {"temperature": "x"}}, "temperature: Input should be a valid number"),
    ('{"question": "1+2", "options": {"temperature": Infinity}}', "options: option 'temperature' is inf"),
    ('{"question": "1+2", "options": {"temperature": NaN}}', "options: option 'temperature' is nan"),
    ({"options": {"temperature": 1e-300}}, "too small to sample at"),
    ({"strategy": "particle", "options": {"weight_temperature": 0}}, "weight_temperature: Input should be greater"),
    ({"strategy": "mcts", "options": {"c_puct": "x"}}, "c_puct: Input should be a valid number"),
    ({"strategy": "beam", "options": {"step_tokens": 0}}, "step_tokens: Input should be greater than or equal to 1"),
    ({"strategy": "beam", "options": {"delimiter": ""}}, "delimiter: String should have at least 1 character"),
    ({"options": {"bogus": 1}}, "bogus"),
    ({"strategy": "nope"}, "strategy"),
    ({"budget": True}, "budget: Input should be a valid integer"),
    ({"budget": 0}, "budget: Input should be greater than or equal to 1"),
    ({"budget": 65}, "budget: 65 solutions are over this server's limit of 64"),
    ({"budget": 100_000_000}, "budget: 100000000 solutions are over this server's limit of 64"),
    ({"budget_tokens": 0}, "budget_tokens: Input should be greater than or equal to 1"),
    ({"budget_tokens": 5_001}, "budget_tokens: 5001 tokens are over this server's limit of 5000"),
    ({"seed": 1.5}, "seed: Input should be a valid integer"),
    ({"aggregation": "median"}, "aggregation:"),
    ({"suite": "nope"}, "suite: unknown suite 'nope'"),
    ({"question": ""}, "question: String should have at least 1 character"),
    ({"question": "1" * 20_001}, "question: 20001 characters are over this server's limit of 20000"),
    ({"question": "1" * 4301 + "+1"}, "problem:"),
    ({"question": "1" * 5000}, "problem:"),
    ({"question": "1/0"}, "problem: division by zero"),
    ({"value": "prm", "prm": None}, "value: 'prm' needs a PRM"),
    ({"value": "lm=/tmp"}, "value: 'lm=/tmp' is not one this server offers (it offers: prm)"),
    ({"prm": "qwen"}, "prm: 'qwen' is not one this server offers (it offers: arith, exact)"),
    ({"prm": "someone/x"}, "prm: 'someone/x' is not one this server offers"),
    ({"prm": "qwen=someone/x"}, "prm: 'qwen=someone/x' is not one this server offers"),
]


@pytest.mark.parametrize("body, needle", SOLVE_PROBES, ids=lambda x: str(x)[:40])
def test_bad_solve_requests(client, normal, body, needle):
    if isinstance(body, dict):
        body = {k: v for k, v in {"question": "1+2", "budget": 2, "prm": "arith", **body}.items() if v is not None}
    assert_error(post(client, SOLVE, body), 400, needle)
    assert_serving(client, normal)


def test_deeply_nested_question_is_answered_or_refused_never_a_500(client, normal):
    r = post(client, SOLVE, {"question": "(" * 9000 + "1+2" + ")" * 9000, "budget": 2, "prm": "arith"})
    if r.status_code == 200:
        assert r.json()["candidates"]
    else:
        assert_error(r, 400, "problem:")
    assert_serving(client, normal)


def test_solve_scorers_come_from_the_allow_list_only(client, normal, tmp_path):
    """A client names scorers, never paths: missing paths, files, checkpoint-looking folders and hub
    ids all get the same answer (no filesystem probing), nothing is loaded, and named ones work."""
    (tmp_path / "config.json").write_text("{}")
    server = client.app.state.server
    before = (dict(server.prms), dict(server.values))
    messages = set()
    for path in ("/nonexistent/x", "/etc/passwd", "/tmp", str(tmp_path), "Qwen/Qwen2.5-Math-PRM-7B"):
        for field in ("prm", "value"):
            err = assert_error(post(client, SOLVE, {"question": "1+2", "budget": 2, "prm": "arith", field: f"qwen={path}"}),
                               400, f"{field}: 'qwen={path}' is not one this server offers")
            messages.add((field, err["message"].replace(path, "PATH")))
    assert len(messages) == 2  # one message per field, whatever the path
    assert (server.prms, server.values) == before
    for prm in ("arith", "exact"):
        r = post(client, SOLVE, {"question": "12+3*4-5", "budget": 2, "prm": prm, "strategy": "mcts", "value": "prm"})
        assert r.status_code == 200 and r.json()["answer"] == "19", r.text
    assert_serving(client, normal)


def test_body_over_the_limit_is_413_before_parsing(client, normal):
    err = assert_error(post(client, COMPLETIONS, b"{" + b" " * 100_000 + b"}"), 413,
                       "body: 100002 bytes are over this server's limit of 100000 bytes")
    assert "--max-body-bytes" in err["message"]

    def chunks():  # no Content-Length: the cap applies as the body streams in
        for _ in range(30):
            yield b" " * 10_000

    r = client.post(COMPLETIONS, content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "body: it is over this server's limit of 100000 bytes")
    assert_error(client.post(COMPLETIONS, content=b"{}", headers={"content-length": "lots"}), 400,
                 "content-length:")
    # just under the cap is parsed and answered
    padded = json.dumps(NORMAL) + " " * (100_000 - len(json.dumps(NORMAL)))
    assert client.post(COMPLETIONS, content=padded, headers={"content-type": "application/json"}).json()[
        "choices"][0]["token_ids"] == normal


def test_a_bug_is_a_500_with_the_error_body_and_the_server_recovers(client, normal, monkeypatch):
    server = client.app.state.server

    def broken(_prompt: Any) -> list[int]:
        raise RuntimeError("provoked")

    monkeypatch.setattr(server, "encode", broken)
    r = post(client, COMPLETIONS, NORMAL)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "RuntimeError" in r.json()["error"]["message"] and "Traceback" not in r.text
    monkeypatch.undo()
    assert_serving(client, normal)


def test_unknown_paths_and_methods_keep_the_error_shape(client):
    assert client.get("/v1/nothing").json()["error"]["code"] == 404
    assert client.get(COMPLETIONS).json()["error"]["code"] == 405


def test_docs_are_off_behind_a_key(engine, client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200  # no key: a local tool, docs on
    with TestClient(create_app(engine, model_name="arith", api_key="sesame")) as keyed:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert keyed.get(path).status_code == 404
            assert keyed.get(path, headers={"Authorization": "Bearer sesame"}).status_code == 404
        assert keyed.get("/health").status_code == 200
        assert keyed.get("/v1/models").status_code == 401


def test_tokenizing_does_not_block_the_event_loop(engine):
    """A prompt that takes long to tokenize (slowed on purpose) leaves /health answering at once."""
    app = create_app(engine, model_name="arith")
    server = app.state.server
    encode = server.encode

    def slow(prompt: Any) -> list[int]:
        time.sleep(1.5)
        return encode(prompt)

    server.encode = slow
    with ServerThread(app) as srv:
        out: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: out.update(r=httpx.post(srv.url + "/completions", json=NORMAL, timeout=30)))
        worker.start()
        time.sleep(0.2)
        waits = []
        while worker.is_alive():
            start = time.monotonic()
            assert httpx.get(srv.url[:-3] + "/health", timeout=5).status_code == 200
            waits.append(time.monotonic() - start)
            time.sleep(0.05)
        worker.join()
    assert out["r"].status_code == 200 and len(waits) >= 5
    assert max(waits) < 0.5, waits


def test_serve_options_fail_fast_with_one_line(tmp_path):
    empty = tmp_path / "key"
    empty.write_text("\n")
    runner = CliRunner()
    for args, needle in ((["--api-key-file", str(tmp_path / "missing")], "api-key-file: cannot read"),
                         (["--api-key-file", str(empty)], "api-key-file: "),
                         (["--api-key", "k", "--api-key-file", str(empty)], "both give a key"),
                         (["--prm", "arith", "--prm", "arith"], "prm: 'arith' is given twice"),
                         (["--prm", "qwen=" + str(tmp_path / "nope")], "prm: "),
                         (["--max-body-bytes", "0"], "max-body-bytes: must be a positive integer"),
                         (["--max-choices", "-1"], "max-choices: must be a positive integer"),
                         (["--max-tree-tokens", "-1"], "max-tree-tokens: must be a whole number")):
        r = runner.invoke(main, ["serve", *args])
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_load_scorers_allow_list():
    assert load_scorers((), ()) == (None, {})
    prms, values = load_scorers(("arith",), ("prm",))
    assert list(prms) == ["arith"] and values == {}
    with pytest.raises(ReasonError, match="value: 'prm' is given twice"):
        load_scorers(("arith",), ("prm", "prm"))
    assert ServerLimits().body_bytes == MAX_BODY_BYTES


@pytest.mark.slow
def test_real_server_refuses_50_mb_fast_and_keeps_its_memory(tmp_path):
    """``reason serve`` as its own process, key from a file: a 50 MB body (with and without a
    Content-Length) is a 413 in under a second and the server's RSS does not grow by 200 MB; the key
    guards /v1 and the docs are off."""
    key = tmp_path / "key"
    key.write_text("sesame\n")
    port = free_port()
    proc = wait_ready(spawn_server(port, "--api-key-file", str(key)), port)
    try:
        rss = psutil.Process(proc.pid).memory_info().rss
        url = f"http://127.0.0.1:{port}/v1/completions"
        auth = {"Authorization": "Bearer sesame", "content-type": "application/json"}
        body = b'{"prompt": "' + b"1+2 " * 12_500_000 + b'"}'

        def streamed():
            for i in range(0, len(body), 1 << 20):
                yield body[i:i + (1 << 20)]

        for content in (body, streamed()):
            start = time.monotonic()
            r = httpx.post(url, content=content, headers=auth, timeout=30)
            assert time.monotonic() - start < 1.0
            assert_error(r, 413, f"over this server's limit of {MAX_BODY_BYTES} bytes")
        grown = psutil.Process(proc.pid).memory_info().rss - rss
        assert grown < 200e6, grown
        ok = httpx.post(url, json=NORMAL, headers=auth, timeout=60)
        assert ok.status_code == 200 and ok.json()["choices"][0]["token_ids"]
        assert httpx.post(url, json=NORMAL, timeout=60).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 404
    finally:
        stop_server(proc)
