"""``reason serve`` keeps the tree page of a ``/v1/solve`` search asked with ``include_tree``, behind the API key."""

from __future__ import annotations

import json
import re

import httpx

from reason.serve import create_app
from reason.serve.thread import ServerThread
from reason.serve.views import ViewStore

KEY = {"Authorization": "Bearer sesame"}


def page_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="reason-data">(.*?)</script>', page, re.S).group(1))


def test_solve_returns_a_view_url_serving_the_page_behind_the_key(engine):
    with ServerThread(create_app(engine, model_name="arith", api_key="sesame")) as srv:
        body = {"question": "12+3*4-5", "strategy": "best_of_n", "budget": 4, "seed": 1, "prm": "arith",
                "include_tree": True}
        out = httpx.post(srv.url + "/solve", json=body, headers=KEY, timeout=300).json()
        url = out["view_url"]
        assert url.startswith(srv.url + "/views/")
        assert httpx.get(url).status_code == 401  # the same key as the API
        r = httpx.get(url, headers=KEY)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        view = page_data(r.text)["views"][0]
        assert [n["id"] for n in view["tree"]["nodes"]] == [n["id"] for n in out["tree"]["nodes"]]
        assert view["chosen"] == out["chosen"] and view["answer"] == out["answer"]
        assert set(view["pieces"]) == {str(n["id"]) for n in out["tree"]["nodes"] if n["parent"] is not None}
        missing = httpx.get(srv.url + "/views/nope", headers=KEY)
        assert missing.status_code == 404 and "no such search" in missing.json()["error"]["message"]
        plain = httpx.post(srv.url + "/solve", json={**body, "include_tree": False}, headers=KEY, timeout=300).json()
        assert "view_url" not in plain and "tree" not in plain


def test_store_keeps_only_the_latest_views():
    store = ViewStore(None, max_views=2)
    tree = {"nodes": [{"id": 0, "parent": None, "text": "q"}]}
    keys = [store.add({"strategy": "greedy", "tree": tree}) for _ in range(3)]
    assert store.page(keys[0]) is None and store.page(keys[1]) and store.page(keys[2])
