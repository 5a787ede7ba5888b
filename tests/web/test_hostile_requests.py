"""Hostile requests (issue 11): each gave a 500 before; now a 400 with a JSON error, and every
response carries the hardening headers."""

from __future__ import annotations

import base64
import json

import pytest

DEEP = 10_000


def _deep_list(n: int) -> str:
    return "[" * n + "]" * n


def _deep_bool(n: int) -> dict:
    q: dict = {"match_all": {}}
    for _ in range(n):
        q = {"bool": {"must": [q]}}
    return {"query": q}


def _assert_json_400(r, *words: str) -> None:
    assert r.status_code == 400, (r.status_code, r.get_data(as_text=True)[:300])
    body = r.get_json()
    assert body["errors"][0]["status"] == "400"
    for w in words:
        assert w in body["message"], body["message"]


@pytest.mark.parametrize("path", ["/api/watchlists", "/api/filters", "/api/users/bob/grants"])
def test_a_10000_deep_json_body_is_a_400(client, admin_auth, path):
    r = client.post(path, data=_deep_list(DEEP), content_type="application/json", headers=admin_auth)
    _assert_json_400(r, "deeper than")


@pytest.mark.parametrize("path", ["/api/watchlists", "/api/filters", "/api/users/bob/grants"])
def test_a_json_list_where_an_object_is_expected_is_a_400(client, admin_auth, path):
    r = client.post(path, data=json.dumps([{"code": "x", "streams": ["a"]}]), content_type="application/json",
                    headers=admin_auth)
    _assert_json_400(r, "expected a JSON object")


def test_non_string_filter_code_is_a_400(client, admin_auth):
    r = client.post("/api/filters", json={"code": ["import os"]}, headers=admin_auth)
    _assert_json_400(r, "code")


@pytest.mark.parametrize("depth", [40, 400, DEEP])
def test_deep_es_dsl_nesting_is_a_400(client, depth):
    raw = json.dumps(_deep_bool(depth)) if depth < 100 else (
        '{"query":' + '{"bool":{"must":[' * depth + '{"match_all":{}}' + "]}}" * depth + "}")
    r = client.get("/v2/loci", query_string={"elasticsearch_query": raw})
    _assert_json_400(r, "deeper than")


def test_shallow_es_dsl_still_works(client):
    r = client.get("/v2/loci", query_string={"elasticsearch_query": json.dumps(_deep_bool(3))})
    assert r.status_code == 200


@pytest.mark.parametrize("cursor", [[{"a": 1}, "x"], [{"$where": "1"}, {"b": 2}], [[1], [2]], {"a": 1},
                                    [1e400, 1]])
def test_cursors_holding_dicts_or_junk_are_a_400(client, cursor):
    raw = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    r = client.get("/v2/loci", query_string={"page[cursor]": raw})
    _assert_json_400(r, "cursor")


def test_a_deep_cursor_is_a_400(client):
    raw = base64.urlsafe_b64encode(_deep_list(DEEP).encode()).decode()
    _assert_json_400(client.get("/v2/loci", query_string={"page[cursor]": raw}), "cursor")


@pytest.mark.parametrize("path", ["/", "/v2/loci", "/v2/loci/nope", "/api/status", "/no-such-page",
                                  "/static/home.js"])
def test_every_response_carries_hardening_headers(client, path):
    r = client.get(path)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp


def test_serve_uses_waitress():
    """``albireo serve`` builds a waitress server, not Werkzeug's development one."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module("broker.cli.serve"))
    assert "from waitress.server import create_server" in source and "app.run(" not in source
