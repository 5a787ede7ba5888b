"""Writes need a per-user API key or a login session; keys are hashed and revocable; forms carry CSRF tokens.

Every key here is made the way the operator makes one (``Users.add``/``new_key``, what ``albireo
users`` calls), and every refusal is checked by its status code and by the write not happening.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.config import ConfigError, load_config

FILTER = """
from broker.filtering.contract import BaseFilter


class {name}(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{{"name": "{tag}", "description": "test"}}]

    def _run(self, locus):
        pass
"""


@pytest.fixture(scope="module")
def users(app):
    from web.auth import _EXT

    return app.extensions[_EXT]


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


def _login(client, key: str, next_path: str = "/filters"):
    token = _csrf(client.get(f"/login?next={next_path}").data.decode())
    return client.post("/login", data={"api_key": key, "csrf_token": token, "next": next_path})


def _revisions(client, name: str) -> list[dict]:
    r = client.get(f"/api/filters/{name}")
    return r.get_json()["data"]["revisions"] if r.status_code == 200 else []


def test_keys_are_stored_hashed_and_listed_without_secrets(users, web_config):
    key_id, key = users.new_key("alice", label="laptop")
    secret = key.split("_", 2)[2]
    db = Path(web_config.users.db)
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the database and its WAL
    assert secret.encode() not in raw and key.encode() not in raw
    rec = users.records.key(key_id)
    assert rec.hash.startswith("scrypt$") and secret not in rec.hash
    listed = repr(users.list())
    assert key_id in listed and "laptop" in listed
    assert secret not in listed and rec.hash not in listed and "scrypt$" not in listed


def test_a_revoked_key_is_refused_and_writes_nothing(client, users):
    key_id, key = users.new_key("alice", label="to revoke")
    auth = {"Authorization": f"Bearer {key}"}
    body = {"name": "revocation", "objects": [{"ra": 10, "dec": 10, "radius_arcsec": 2}]}
    assert client.post("/api/watchlists", json=body, headers=auth).status_code == 201
    users.revoke_key(key_id)
    before = len(client.get("/api/watchlists").get_json()["data"])
    r = client.post("/api/watchlists", json=body, headers=auth)
    assert r.status_code == 401 and "revoked" in r.get_json()["message"]
    assert len(client.get("/api/watchlists").get_json()["data"]) == before


def test_malformed_and_forged_keys_are_refused(client, keys):
    body = {"name": "forged", "objects": [{"ra": 1, "dec": 1, "radius_arcsec": 2}]}
    real = keys["alice"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")  # right id, wrong secret
    for header in (f"Bearer {forged}", "Bearer alb_000000000000_" + "x" * 43, "Bearer ' OR 1=1 --",
                   f"Basic {real}", "Bearer "):
        r = client.post("/api/watchlists", json=body, headers={"Authorization": header})
        assert r.status_code == 401, header


def test_portal_login_csrf_and_submission(app, users):
    client = app.test_client()
    name = "PortalCsrf"
    code = FILTER.format(name=name, tag="portal_csrf")
    # a wrong key at login: refused, no session
    r = _login(client, "alb_0123456789ab_" + "w" * 43)
    assert r.status_code == 401 and "Unknown, revoked or malformed" in r.data.decode()
    assert client.post("/filters", data={"code": code}).status_code == 401
    # the right key: a session; the form now carries a CSRF token
    r = _login(client, users.new_key("bob", label="portal")[1])
    assert r.status_code == 302 and r.headers["Location"].endswith("/filters")
    html = client.get("/filters").data.decode()
    assert 'id="filter-form"' in html and 'id="signed-in">bob<' in html
    token = _csrf(html[html.index('id="filter-form"'):])
    # no token, or a wrong one: refused, nothing submitted
    assert client.post("/filters", data={"code": code, "name": name}).status_code == 403
    assert client.post("/filters", data={"code": code, "name": name, "csrf_token": "x" * 43}).status_code == 403
    assert _revisions(client, name) == []
    # with the session's token: submitted, authored by the session's user
    r = client.post("/filters", data={"code": code, "name": name, "csrf_token": token})
    assert r.status_code == 302, r.data.decode()[:500]
    revs = _revisions(client, name)
    assert [x["author"] for x in revs] == ["bob"]


def test_a_session_cannot_post_json_without_csrf_either(app, users):
    """The cookie rides along on any request from a browser: the API checks CSRF for sessions too."""
    client = app.test_client()
    _login(client, users.new_key("bob", label="api via session")[1])
    body = {"name": "csrf-json", "objects": [{"ra": 5, "dec": 5, "radius_arcsec": 2}]}
    assert client.post("/api/watchlists", json=body).status_code == 403
    token = _csrf(client.get("/filters").data.decode())
    r = client.post("/api/watchlists", json=body, headers={"X-CSRF-Token": token})
    assert r.status_code == 201 and r.get_json()["data"]["author"] == "bob"


def test_login_itself_needs_the_csrf_token(app, keys):
    client = app.test_client()
    client.get("/login")
    r = client.post("/login", data={"api_key": keys["alice"]})
    assert r.status_code == 403
    assert 'id="signed-in"' not in client.get("/filters").data.decode()


def test_revoking_a_key_ends_its_sessions(app, users):
    client = app.test_client()
    key_id, key = users.new_key("alice", label="session")
    _login(client, key)
    assert 'id="signed-in">alice<' in client.get("/filters").data.decode()
    users.revoke_key(key_id)
    html = client.get("/filters").data.decode()
    assert 'id="signed-in"' not in html and 'id="login-to-submit"' in html


def test_logout_ends_the_session(app, users):
    client = app.test_client()
    _login(client, users.new_key("alice", label="logout")[1])
    html = client.get("/filters").data.decode()
    token = _csrf(html)
    assert client.post("/logout", data={}).status_code == 403  # logout is CSRF-checked too
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert 'id="signed-in"' not in client.get("/filters").data.decode()


def test_login_never_redirects_off_site(app, keys):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        client = app.test_client()
        r = _login(client, keys["alice"], next_path=target)
        assert r.status_code == 302
        assert r.headers["Location"] in ("/", "http://localhost/"), (target, r.headers["Location"])


def test_grants_over_the_api_are_admin_only(client, admin_auth, user_auth, users):
    assert client.get("/api/users", headers=user_auth).status_code == 403
    r = client.post("/api/users/bob/grants", json={"streams": ["high_snr"]}, headers=user_auth)
    assert r.status_code == 403
    assert "high_snr" not in users.records.get("bob").grants
    r = client.post("/api/users/bob/grants", json={"streams": ["high_snr", "fast_riser"]}, headers=admin_auth)
    assert r.status_code == 200 and r.get_json()["data"]["granted"] == ["high_snr", "fast_riser"]
    assert set(users.records.get("bob").grants) == {"high_snr", "fast_riser"}
    assert client.post("/api/users/bob/grants", json={"streams": ["../x"]}, headers=admin_auth).status_code == 400
    assert client.post("/api/users/nobody/grants", json={"streams": ["a"]}, headers=admin_auth).status_code == 404
    assert client.delete("/api/users/bob/grants/fast_riser", headers=user_auth).status_code == 403
    assert client.delete("/api/users/bob/grants/fast_riser", headers=admin_auth).status_code == 204
    assert client.delete("/api/users/bob/grants/fast_riser", headers=admin_auth).status_code == 404
    assert users.records.get("bob").grants == ["high_snr"]
    me = client.get("/api/users/me", headers=user_auth).get_json()["data"]
    assert me["name"] == "alice" and me["role"] == "user"


def test_users_made_over_the_api_show_their_secrets_once(client, admin_auth, users):
    r = client.post("/api/users", json={"name": "carol", "role": "user"}, headers=admin_auth)
    assert r.status_code == 201
    made = r.get_json()["data"]
    assert made["kafka_password"] and made["api_key"].startswith("alb_")
    listed = client.get("/api/users", headers=admin_auth).get_data(as_text=True)
    assert made["kafka_password"] not in listed and made["api_key"] not in listed and made["key_id"] in listed
    carol = {"Authorization": f"Bearer {made['api_key']}"}
    assert client.get("/api/users/me", headers=carol).get_json()["data"]["name"] == "carol"
    # a user revokes their own key; another user's they may not
    assert client.delete(f"/api/users/carol/keys/{made['key_id']}", headers=carol).status_code == 204
    assert client.get("/api/users/me", headers=carol).status_code == 401
    assert client.post("/api/users", json={"name": "carol"}, headers=admin_auth).status_code == 400
    assert client.post("/api/users", json={"name": "bad.name"}, headers=admin_auth).status_code == 400


def test_a_pipeline_principal_cannot_write_through_the_api(client, users):
    users.add("pipe-web", "pipeline", with_key=False)
    _, key = users.new_key("pipe-web")
    r = client.post("/api/watchlists", json={"name": "p", "objects": [{"ra": 1, "dec": 1, "radius_arcsec": 1}]},
                    headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and "pipeline" in r.get_json()["message"]


def test_the_old_shared_token_setting_is_refused_with_the_way_forward():
    with pytest.raises(ConfigError, match="albireo users add"):
        load_config(env={"ALBIREO_WEB__TOKEN": "s3cret"})


def test_the_portal_starts_without_the_kafka_client_library(tmp_path, monkeypatch):
    """Grants reach Kafka only when made: opening the users service imports no client library."""
    import sys

    from broker.assemble import open_users

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if the servers extra were not installed
    monkeypatch.setitem(sys.modules, "confluent_kafka.admin", None)
    cfg = load_config(env={})
    cfg.users.db = str(tmp_path / "u.sqlite")
    users = open_users(cfg, check_reachable_now=False)
    with pytest.raises(ImportError):  # the first change that needs the broker asks for it
        users.add("offline")
    assert users.list() == []  # and nothing was recorded
