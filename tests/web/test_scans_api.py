"""``/api/scans`` over a fresh embedded store: what it accepts, what it refuses (4xx with reasons), abort.

No worker runs here: these are the API's own rules. ``test_scans_web.py`` runs whole scans.
"""

from __future__ import annotations

import json

import pytest

from tests.scans_harness import app_and_key, scan_env

GCN = "gcn/notices/icecube/single_neutrino_alerts.gold_bronze_track_alerts.example.json"
EVENT = {"ra": 10.0, "dec": 5.0, "time": "2026-01-01T00:00:00Z", "run_id": 1, "event_id": 2}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scans-api")
    app, auth = app_and_key(scan_env(tmp))
    return app.test_client(), auth, app.extensions["albireo"].store


def test_a_gcn_neutrino_notice_starts_a_queued_scan(api, shared_data):
    client, auth, store = api
    notice = json.loads((shared_data / GCN).read_text())
    r = client.post("/api/scans", headers=auth, json={"event": notice, "priority": "backfill"})
    assert r.status_code == 201, r.get_json()
    data = r.get_json()["data"]
    assert data["status"] == "queued" and data["nside_progression"] == [8, 64, 512]
    ev = data["event"]
    assert (ev["run_id"], ev["event_id"], ev["ra"], ev["dec"]) == (137840, 57034692, 345.82, 9.01)
    assert ev["source_event"] == "IceCube-137840_57034692" and ev["is_real_event"] is True
    rec = store.scan(data["scan_id"])
    assert rec["priority"] == "backfill" and rec["params"] == {"sigma_deg": 1.0, "work_ms": 0.0}
    backlog = client.get("/api/scans/backlog").get_json()["data"]
    assert data["scan_id"] in [b["scan_id"] for b in backlog]
    found = client.post("/api/scans/find", json={"filter": {"source_event": "IceCube-137840_57034692"}})
    assert [s["scan_id"] for s in found.get_json()["data"]] == [data["scan_id"]]
    man = client.get(f"/api/scans/{data['scan_id']}/manifest").get_json()["data"]
    assert man["pixels_done"] == 0 and man["complete"] is False and man["status"] == "queued"
    res = client.get(f"/api/scans/{data['scan_id']}/result").get_json()
    assert res["skyscan_result"] == {} and res["is_final"] is False


def test_writes_need_an_api_key(api):
    client, auth, _ = api
    assert client.post("/api/scans", json={"event": EVENT}).status_code == 401
    sid = client.post("/api/scans", headers=auth, json={"event": EVENT}).get_json()["data"]["scan_id"]
    assert client.delete(f"/api/scans/{sid}").status_code == 401


@pytest.mark.parametrize("body,status,says", [
    ([1, 2], 400, "JSON object"),
    ({"reconstruction": "track_gaussian"}, 400, "'event' is required"),
    ({"event": EVENT, "colour": "red"}, 400, "unknown field"),
    ({"event": {**EVENT, "ra": 400}}, 400, "event.ra must lie"),
    ({"event": {**EVENT, "dec": "north"}}, 400, "event.dec must be"),
    ({"event": {k: v for k, v in EVENT.items() if k != "time"}}, 400, "event.time"),
    ({"event": {**EVENT, "time": "yesterday"}}, 400, "ISO 8601"),
    ({"event": {**EVENT, "run_id": -1}}, 400, "run_id"),
    ({"event": {**EVENT, "event_type": "<script>"}}, 400, "event_type"),
    ({"event": EVENT, "priority": "urgent"}, 400, "priority"),
    ({"event": EVENT, "nside_progression": "8,64"}, 400, "list of integers"),
    ({"event": EVENT, "nside_progression": [8, 60]}, 422, "power of two"),
    ({"event": EVENT, "nside_progression": [8, 2048]}, 422, "power of two from 1 to 1024"),
    ({"event": EVENT, "nside_progression": [64, 8]}, 422, "increase strictly"),
    ({"event": EVENT, "nside_progression": [128, 512]}, 422, "whole sky"),
    ({"event": EVENT, "nside_progression": [1, 2, 4, 8, 16, 32, 64]}, 422, "at most 6"),
    ({"event": EVENT, "reconstruction": "millipede"}, 422, "unknown reconstruction"),
    ({"event": EVENT, "params": {"sigma_deg": 0}}, 422, "sigma_deg must lie"),
    ({"event": EVENT, "params": {"sigma_deg": True}}, 422, "finite number"),
    ({"event": EVENT, "params": {"evil": 1}}, 422, "no parameter"),
    ({"event": EVENT, "params": [1]}, 400, "'params' must be"),
    ({"event": {"mission": "IceCube", "ra": 1}}, 422, "not valid"),
])
def test_hostile_requests_get_a_reason_not_a_500(api, body, status, says):
    client, auth, _ = api
    r = client.post("/api/scans", headers=auth, json=body)
    assert r.status_code == status, r.get_json()
    assert says in r.get_json()["message"]


def test_malformed_bodies_and_ids(api):
    client, auth, _ = api
    for raw in (b"{", b'{"event": NaN}', b"[" * 50_000):
        r = client.post("/api/scans", headers={**auth, "Content-Type": "application/json"}, data=raw)
        assert r.status_code == 400
    assert client.get("/api/scans/not-an-id/manifest").status_code == 400
    assert client.get("/api/scans/abc123/status").status_code == 404
    assert client.post("/api/scans/find", json={"filter": {"$where": "1"}}).status_code == 400
    assert client.post("/api/scans/find", json={"filter": {"run_id": "1"}}).status_code == 400
    assert client.get("/api/scans?status=weird").status_code == 400


def test_a_gw_notice_is_not_a_neutrino_to_reconstruct(api, shared_data):
    client, auth, _ = api
    lvk = json.loads((shared_data / "lvk" / "MS181101ab-preliminary.json").read_text())
    r = client.post("/api/scans", headers=auth, json={"event": lvk})
    assert r.status_code == 422 and "neutrino" in r.get_json()["message"], r.get_json()


def test_abort_is_final_and_only_the_owner_or_an_admin_may(api):
    from broker.assemble import open_users

    client, auth, store = api
    sid = client.post("/api/scans", headers=auth, json={"event": EVENT}).get_json()["data"]["scan_id"]
    users = open_users(client.application.extensions["albireo"].cfg)
    other = {"Authorization": f"Bearer {users.add('mallory', 'user').api_key}"}
    r = client.delete(f"/api/scans/{sid}", headers=other)
    assert r.status_code == 403 and "astro" in r.get_json()["message"]
    assert store.scan(sid)["status"] == "queued"
    r = client.delete(f"/api/scans/{sid}", headers=auth)
    assert r.status_code == 200 and store.scan(sid)["status"] == "aborted"
    assert client.get(f"/api/scans/{sid}/status").get_json()["data"]["finished"] is True
    assert client.delete(f"/api/scans/{sid}", headers=auth).status_code == 409
    assert sid not in [b["scan_id"] for b in client.get("/api/scans/backlog").get_json()["data"]]
    recos = client.get("/api/scans/reconstructions").get_json()["data"]
    assert "track_gaussian" in [r["name"] for r in recos]


def test_the_event_page_links_the_scans_of_its_notice(tmp_path, shared_data):
    """The notice goes through the real notice pipeline (the event page), then a scan is started from it."""
    from broker.assemble import embedded_notice_worker
    from broker.config import load_config

    env = scan_env(tmp_path, ALBIREO_MULTIMESSENGER__DOWNLOAD_SKYMAPS="false")
    with embedded_notice_worker(load_config(env=env), [shared_data / GCN], tmp_path / "out") as a:
        a.worker.run()
    app, auth = app_and_key(env)
    client = app.test_client()
    page = client.get("/events/IceCube-137840_57034692")
    assert page.status_code == 200 and "scan-link" not in page.get_data(as_text=True)
    notice = json.loads((shared_data / GCN).read_text())
    sid = client.post("/api/scans", headers=auth, json={"event": notice}).get_json()["data"]["scan_id"]
    text = client.get("/events/IceCube-137840_57034692").get_data(as_text=True)
    assert f'href="/scans/{sid}"' in text and "Reconstructions" in text
    listing = client.get("/scans").get_data(as_text=True)
    assert sid[:12] in listing and 'href="/events/IceCube-137840_57034692"' in listing
