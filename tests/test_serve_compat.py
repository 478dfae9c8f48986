"""``reason serve`` speaks to vLLM's clients: its sampling extensions are accepted (honoured where the
engine can, else checked and ignored: ``min_p``, the penalties and ``min_tokens`` are honoured, see
tests/test_sampling_extensions.py), unknown fields are ignored with a warning and a header naming
them, wrong types and ranges are still refused, and usage reports the cached prompt tokens."""

from __future__ import annotations

import logging

import httpx
import pytest

from reason.core.engine.hf import HFEngine
from reason.serve import create_app
from reason.serve.compat import IGNORED_HEADER
from reason.serve.thread import ServerThread
from tasks.registry import resolve_model


@pytest.fixture(scope="module")
def server():
    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    with ServerThread(create_app(engine, model_name="arith")) as srv:
        srv.engine = engine
        yield srv


def post(server, path: str, **body) -> httpx.Response:
    return httpx.post(server.url + "/" + path, json=body, timeout=60)


GREEDY = {"prompt": "12+7*3=", "max_tokens": 12, "temperature": 0}


def test_unknown_fields_are_ignored_with_a_warning_and_a_header(server, caplog):
    plain = post(server, "completions", **GREEDY)
    assert plain.status_code == 200 and IGNORED_HEADER not in plain.headers
    with caplog.at_level(logging.WARNING, logger="reason.serve"):
        extra = post(server, "completions", **GREEDY, extra_body={"x": 1}, frobnicate=True, guided_json={"a": 1})
    assert extra.status_code == 200, extra.text
    assert extra.headers[IGNORED_HEADER] == "extra_body,frobnicate,guided_json"
    assert any("frobnicate" in r.getMessage() for r in caplog.records)
    assert extra.json()["choices"][0]["token_ids"] == plain.json()["choices"][0]["token_ids"]
    odd = post(server, "completions", **GREEDY, **{"bad\r\nX-Injected: 1": 1, "é": 2})
    assert odd.status_code == 200 and odd.headers[IGNORED_HEADER] == "bad??X-Injected:?1,?"
    assert "x-injected" not in odd.headers


def test_vllm_sampling_fields_at_neutral_values_change_nothing(server):
    neutral = {"min_p": 0.0, "repetition_penalty": 1.0, "min_tokens": 0, "presence_penalty": 0,
               "frequency_penalty": 0.0, "use_beam_search": False, "spaces_between_special_tokens": True,
               "best_of": 1, "priority": 0, "top_k": -1, "logit_bias": {}}
    r = post(server, "completions", **GREEDY, **neutral)
    assert r.status_code == 200 and IGNORED_HEADER not in r.headers
    honoured = post(server, "completions", **GREEDY, min_p=0.1, repetition_penalty=1.3, min_tokens=2,
                    presence_penalty=0.5, frequency_penalty=0.5)
    assert honoured.status_code == 200 and IGNORED_HEADER not in honoured.headers
    unhonoured = post(server, "completions", **GREEDY, min_p=0.1, length_penalty=0.5, use_beam_search=True)
    assert unhonoured.status_code == 200
    assert unhonoured.headers[IGNORED_HEADER] == "length_penalty,use_beam_search"


@pytest.mark.parametrize("extra, needle", [
    ({"min_p": "0.1"}, "min_p"),
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"presence_penalty": 3.0}, "presence_penalty"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 20, "max_tokens": 4}, "min_tokens (20) is over max_tokens (4)"),
    ({"top_k": "5"}, "top_k"),
    ({"skip_special_tokens": "yes"}, "skip_special_tokens"),
    ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ({"logit_bias": {"5": 1000}}, "logit_bias"),
])
def test_known_fields_keep_their_types_and_ranges(server, extra, needle):
    r = post(server, "completions", **{**GREEDY, **extra})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text


def test_top_k_one_is_greedy(server):
    greedy = post(server, "completions", **GREEDY).json()["choices"][0]["token_ids"]
    for seed in (1, 2):
        sampled = post(server, "completions", **{**GREEDY, "temperature": 1.0, "top_k": 1, "seed": seed}).json()
        assert sampled["choices"][0]["token_ids"] == greedy


def test_skip_special_tokens_decides_the_text(server):
    body = {"prompt": "2+3=", "max_tokens": 40, "temperature": 0}
    kept = post(server, "completions", **body, skip_special_tokens=False).json()["choices"][0]
    skipped = post(server, "completions", **body, skip_special_tokens=True).json()["choices"][0]
    default = post(server, "completions", **body).json()["choices"][0]
    assert kept["finish_reason"] == "stop" and kept["token_ids"] == skipped["token_ids"]
    eos = server.engine.tokenizer.eos_token
    assert kept["text"].endswith(eos) and not skipped["text"].endswith(eos)
    assert skipped["text"] == kept["text"][: -len(eos)] == default["text"]  # the engine leaves EOS out


def test_truncate_prompt_tokens_keeps_the_last_ones(server):
    ids = server.engine.tokenize_prompt("12+7*3-4=")[0]
    r = post(server, "completions", prompt=ids, max_tokens=4, temperature=0, truncate_prompt_tokens=3).json()
    cut = post(server, "completions", prompt=ids[-3:], max_tokens=4, temperature=0).json()
    assert r["usage"]["prompt_tokens"] == 3 and r["choices"][0]["token_ids"] == cut["choices"][0]["token_ids"]


def test_chat_continues_the_final_assistant_message(server):
    tok = server.engine.tokenizer
    messages = [{"role": "user", "content": "12+7*3="}, {"role": "assistant", "content": "12+21"}]
    r = post(server, "chat/completions", messages=messages, max_tokens=8, temperature=0,
             add_generation_prompt=False, continue_final_message=True)
    assert r.status_code == 200, r.text
    text = tok.apply_chat_template(messages, continue_final_message=True, add_generation_prompt=False, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert text.endswith("12+21") and r.json()["usage"]["prompt_tokens"] == len(ids)
    same = post(server, "completions", prompt=ids, max_tokens=8, temperature=0).json()
    assert r.json()["choices"][0]["token_ids"] == same["choices"][0]["token_ids"]
    both = post(server, "chat/completions", messages=messages, continue_final_message=True)
    assert both.status_code == 400 and "add_generation_prompt" in both.json()["error"]["message"]


def test_usage_reports_the_cached_prompt_tokens(server):
    ids = server.engine.tokenize_prompt("3*4+5*6=")[0]
    first = post(server, "completions", prompt=ids, max_tokens=6, temperature=0).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    path = ids + first["choices"][0]["token_ids"]
    second = post(server, "completions", prompt=path + [5], max_tokens=4, temperature=0).json()
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == len(path)
