"""Flask test client over every /v2 and /api route: shapes antares-client parses, values from the store."""

from __future__ import annotations

import io
import json
import re

import pytest


def test_loci_list_pagination_walks_every_locus(client, store):
    seen, url = [], "/v2/loci?limit=7"
    while url:
        r = client.get(url)
        assert r.status_code == 200
        body = r.get_json()
        assert set(body) == {"data", "meta", "links"}
        seen += [d["locus"]["locus_id"] for d in body["data"]]
        url = body["links"]["next"]
        if url:
            url = url.replace("http://localhost", "")
    assert len(seen) == len(set(seen)) == store.counts()["loci"]


def test_loci_sorted_newest_first(client):
    body = client.get("/v2/loci?limit=50&sort=-properties.newest_alert_observation_time").get_json()
    times = [d["locus"]["properties"]["newest_alert_observation_time"] for d in body["data"]]
    assert times == sorted(times, reverse=True)


def test_locus_detail_matches_store(client, store, locus_with):
    loc = locus_with(lambda x: len(x.alerts) > 5)
    data = client.get(f"/v2/loci/{loc.locus_id}").get_json()["data"]
    assert data["id"] == loc.locus_id
    assert data["ra"] == pytest.approx(loc.ra) and data["dec"] == pytest.approx(loc.dec)
    assert data["tags"] == sorted(loc.user_tags)
    assert data["internal_properties"]["num_alerts"] == len(loc.alerts)
    lines = data["lightcurve"].strip().split("\n")
    assert lines[0].startswith("alert_id,ant_mjd")
    assert len(lines) - 1 == len([a for a in loc.alerts if a.survey in (1, 2, 3, 4)])


def test_locus_alerts_and_catalog_matches(client, store, host_objects, locus_with):
    ztf_id = host_objects[0][0]
    loc = locus_with(lambda x: x.internal_properties.get("ztf_object_id") == ztf_id)
    alerts = client.get(f"/v2/loci/{loc.locus_id}/alerts").get_json()["data"]
    assert [a["id"] for a in alerts] == [a.alert_id for a in loc.alerts]
    assert all({"mjd", "created_at", "properties", "survey", "grav_wave_events"} <= set(a) for a in alerts)
    matches = client.get(f"/v2/loci/{loc.locus_id}/catalog-matches").get_json()["data"]
    names = {m["catalog_name"] for m in matches}
    assert "sample_hosts" in names
    host = next(m for m in matches if m["catalog_name"] == "sample_hosts")
    assert host["object_name"] == f"HOST-{ztf_id}"
    assert host["extra"]["separation"] == pytest.approx(0.3, abs=0.2)


def test_statistics_counts_tags_and_catalogs(client, app):
    data = client.get("/v2/loci/statistics").get_json()["data"]
    index = app.extensions["albireo"].index
    assert data["tags"] == index.tag_counts()
    assert data["catalogs"].get("sample_hosts") == 2
    assert data["max_num_measurements"] >= data["min_num_measurements"] >= 1


def test_search_by_term_cone_and_range(client, store, host_objects):
    ztf_id, ra, dec = host_objects[1]
    q = {"query": {"bool": {"filter": {"term": {"properties.ztf_object_id": ztf_id}}}}}
    data = client.get("/v2/loci", query_string={"elasticsearch_query": json.dumps(q)}).get_json()["data"]
    assert [d["locus"]["properties"]["ztf_object_id"] for d in data] == [ztf_id]
    cone = {"query": {"bool": {"filter": {"sky_distance": {"radius": "2 arcsec", "location": f"{ra} {dec}"}}}}}
    data = client.get("/v2/loci", query_string={"elasticsearch_query": json.dumps(cone)}).get_json()["data"]
    assert len(data) == 1 and data[0]["locus"]["properties"]["ztf_object_id"] == ztf_id
    rng = {"query": {"range": {"properties.num_alerts": {"gt": 20}}}}
    data = client.get("/v2/loci", query_string={"elasticsearch_query": json.dumps(rng), "limit": 1000}).get_json()
    expected = sum(1 for b in store.iter_loci() for x in b if x.internal_properties["num_alerts"] > 20)
    assert len(data["data"]) == data["meta"]["count"] == expected


@pytest.mark.parametrize("url, fragment", [
    ("/v2/loci?limit=abc", "limit"),
    ("/v2/loci?limit=5000", "limit"),
    ("/v2/loci?elasticsearch_query=%7Bnot-json", "elasticsearch_query"),
    ('/v2/loci?elasticsearch_query={"query":{"script":{}}}', "script"),
    ('/v2/loci?elasticsearch_query={"query":{"sky_distance":{"radius":"2 parsec","location":"1 2"}}}', "radius"),
    ("/v2/loci?page[cursor]=zzzz", "cursor"),
    ("/v2/loci?sort=-bad%20name", "property name"),
    ("/v2/catalog_search/abc/10", "ra"),
    ("/v2/catalog_search/400/10", "ra"),
    ("/v2/catalog_samples?n=0", "n"),
    ("/v2/alerts/x/cutouts/bogus", "kind"),
    ("/v2/grav_wave_notice/latest", "ids"),
    ("/v2/grav_wave_notice/S1/not-a-date", "ISO"),
])
def test_bad_parameters_are_400_json(client, url, fragment):
    r = client.get(url)
    assert r.status_code == 400, r.data
    body = r.get_json()
    assert fragment.lower() in body["message"].lower()


@pytest.mark.parametrize("url", ["/v2/loci/ALBnope", "/v2/loci/ALBnope/alerts", "/v2/loci/ALBnope/catalog-matches",
                                 "/v2/grav_wave_notice/S000000/latest", "/v2/alerts/none/cutouts/science",
                                 "/api/filters/nope", "/api/watchlists/nope/loci", "/api/mm/events/S0"])
def test_missing_is_404_json(client, url):
    r = client.get(url)
    assert r.status_code == 404 and "message" in r.get_json()


def test_thumbnails_and_fits_blob(client, store, locus_with):
    loc = locus_with(lambda x: any(not a.is_history and store.cutouts(a.alert_id) for a in x.alerts))
    alert = next(a for a in loc.alerts if not a.is_history and store.cutouts(a.alert_id))
    data = client.get(f"/v2/alerts/{alert.alert_id}/thumbnails").get_json()["data"]
    kinds = {t["thumbnail_type"] for t in data}
    assert kinds == set(store.cutouts(alert.alert_id))
    src = data[0]["src"].replace("http://localhost", "")
    blob = client.get(src)
    assert blob.status_code == 200 and blob.data == store.cutouts(alert.alert_id)[data[0]["thumbnail_type"]]


def test_catalog_search_and_samples(client):
    data = client.get("/v2/catalog_search/10.6848/41.2690").get_json()["data"]  # M31's centre
    assert any(d["catalog_name"] == "openngc" and d["properties"]["name"] == "NGC0224" for d in data)
    samples = client.get("/v2/catalog_samples?n=4").get_json()["data"]
    assert sum(1 for s in samples if s["catalog_name"] == "openngc") == 4


def test_openapi_documents_every_route(client, app):
    spec = client.get("/api/openapi.json").get_json()
    documented = {p for p in spec["paths"]}
    routed = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule
        if path.startswith(("/v2/", "/api/")) and path != "/v2/":
            routed.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path))  # <int:n> is {n} in OpenAPI
    assert routed == documented


def test_own_api_status_filters_streams(client, store):
    s = client.get("/api/status").get_json()
    assert s["counts"] == store.counts()
    filters = client.get("/api/filters").get_json()
    names = {f["name"] for f in filters["data"]}
    assert {"high_snr", "fast_riser"} <= names
    streams = client.get("/api/streams").get_json()["data"]
    hs = next(x for x in streams if x["tag"] == "high_snr")
    assert hs["topic"] == "albireo.loci.high_snr" and hs["format"] == "albireo" and "Consumer" in hs["confluent_kafka"]
    assert "SCRAM-SHA-512" in hs["confluent_kafka"] and hs["antares_client"] == ""
    assert "fastavro.reader(io.BytesIO(msg.value()))" in hs["confluent_kafka"]  # no Albireo code needed
    assert "albireo-demo/streams/albireo.loci.high_snr.avro-stream" in hs["stream_file"]
    fr = next(x for x in streams if x["tag"] == "fast_riser")
    assert fr["topics"] == ["client.fast_riser"] and fr["format"] == "antares"
    assert "StreamingClient" in fr["antares_client"] and "bson.loads" in fr["confluent_kafka"]
    assert fr["stream_file"] == ""  # antares-format streams have no Avro file


def test_watchlist_lifecycle_needs_a_users_key(client, host_objects, user_auth, keys):
    _, ra, dec = host_objects[0]
    body = {"name": "hosts", "objects": [{"ra": ra, "dec": dec, "radius_arcsec": 3, "label": "h0"}]}
    assert client.post("/api/watchlists", json=body).status_code == 401
    assert client.post("/api/watchlists", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = user_auth
    assert client.post("/api/watchlists", json={"name": "x", "objects": [{"ra": 999, "dec": 0}]},
                       headers=auth).status_code == 400
    r = client.post("/api/watchlists", json=body, headers=auth)
    assert r.status_code == 201
    wl = r.get_json()["data"]
    assert wl["author"] == "alice"  # the key's owner, not a field the caller chose
    wl_id = wl["id"]
    loci = client.get(f"/api/watchlists/{wl_id}/loci").get_json()["data"]
    assert [x["properties"]["ztf_object_id"] for x in loci] == [host_objects[0][0]]
    other = {"Authorization": f"Bearer {keys['bob']}"}
    assert client.delete(f"/api/watchlists/{wl_id}", headers=other).status_code == 403
    assert client.delete(f"/api/watchlists/{wl_id}", headers=auth).status_code == 204


FILTER_CODE = """
from broker.filtering.contract import BaseFilter


class ApiSubmitted(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "api_submitted", "description": "test"}]

    def _run(self, locus):
        if locus.properties.get("num_alerts", 0) > 1000:
            locus.tag("api_submitted")
"""


def test_filter_submission_auth_and_revisions(client, user_auth):
    assert client.post("/api/filters", data={"code": "x"}).status_code == 401
    r = client.post("/api/filters", data={"code": ""}, headers=user_auth)
    assert r.status_code == 400
    r = client.post("/api/filters", data={"code": "def f(:"}, headers=user_auth)
    assert r.status_code == 422
    r = client.post("/api/filters", data={"code": FILTER_CODE, "author": "someone-else"}, headers=user_auth)
    assert r.status_code == 201, r.get_json()
    rev = r.get_json()["data"]
    assert rev["name"] == "ApiSubmitted" and rev["author"] == "alice" and rev["status"] == "submitted"
    listed = {f["name"]: f for f in client.get("/api/filters").get_json()["data"]}
    assert listed["ApiSubmitted"]["output_tags"] == ["api_submitted"]
    detail = client.get("/api/filters/ApiSubmitted").get_json()["data"]
    assert [x["revision"] for x in detail["revisions"]] == [rev["revision"]]
    assert "ApiSubmitted" in client.get("/filters/ApiSubmitted").data.decode()


def test_mm_events_list(client):
    r = client.get("/api/mm/events")
    assert r.status_code == 200 and isinstance(r.get_json()["data"], list)


def test_portal_exports(client, store):
    csv_text = client.get("/search?format=csv&all=1").data.decode()
    lines = csv_text.strip().split("\n")
    assert lines[0].startswith("locus_id,ra,dec") and len(lines) - 1 == store.counts()["loci"]
    from astropy.io.votable import parse_single_table

    vot = client.get("/search?format=votable&all=1")
    table = parse_single_table(io.BytesIO(vot.data)).to_table()
    assert len(table) == store.counts()["loci"]
    assert table["ra"].unit == "deg"


def test_fast_lightcurve_equals_devkit_timeseries_path(store):
    """The API's light curve (slim DataFrame into the devkit's correction) equals ``Locus.lightcurve``."""
    import numpy as np
    import pandas as pd

    from web.serialize import LIGHTCURVE_COLUMNS, _lightcurve_csv

    compared = 0
    for batch in store.iter_loci():
        for loc in batch:
            try:
                ref = loc.lightcurve("all")
            except OverflowError:  # an LSST sample with an absurd MJD: the astropy path cannot build it
                continue
            fast = pd.read_csv(io.StringIO(_lightcurve_csv(loc)))
            assert list(fast["alert_id"].astype(str)) == [str(x) for x in ref["alert_id"]]
            for c in LIGHTCURVE_COLUMNS[1:]:
                if c == "ant_passband":
                    assert list(fast[c].fillna("")) == [str(x) for x in np.ma.filled(ref[c].astype(object), "")]
                    continue
                got = pd.to_numeric(fast[c], errors="coerce").to_numpy(float)
                want = np.ma.filled(np.ma.asarray(ref[c]).astype(float), np.nan)
                assert np.allclose(got, want, equal_nan=True, rtol=1e-8), (loc.locus_id, c)
            compared += 1
    assert compared >= 10


COUNTING_CODE = """
from broker.filtering.contract import BaseFilter


class ApiCounting(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "api_multi", "description": "more than one alert"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "api_n", "type": "int", "description": "alerts seen"}]

    def _run(self, locus):
        locus.set_property("api_n", len(locus.alerts))
        if len(locus.alerts) > 1:
            locus.tag("api_multi")
"""


def test_filter_enable_test_replay_disable_over_http(client, store, admin_auth, user_auth):
    """The CLI's enable / test / replay / disable, over the API, with results checked against the store."""
    from tests.web.conftest import ZTF_DIR

    auth = admin_auth
    assert client.post("/api/filters/ApiCounting/enable").status_code == 401
    assert client.post("/api/filters/NoSuchFilter/enable", headers=auth).status_code == 404
    r = client.post("/api/filters", data={"code": COUNTING_CODE}, headers=user_auth)
    assert r.status_code == 201, r.get_json()
    rev = r.get_json()["data"]["revision"]

    # approving is an admin's job: the submitting user's key is refused
    r = client.post("/api/filters/ApiCounting/enable", headers=user_auth, json={"revision": rev})
    assert r.status_code == 403 and "admin" in r.get_json()["message"]
    # nobody approved it yet: enabling is a conflict with its state, said plainly
    r = client.post("/api/filters/ApiCounting/enable", headers=auth, json={"revision": rev})
    assert r.status_code == 409 and "has not been approved" in r.get_json()["message"]
    r = client.post("/api/filters/ApiCounting/approve", headers=user_auth, json={"revision": rev})
    assert r.status_code == 403
    r = client.post("/api/filters/ApiCounting/reject", headers=auth, json={"revision": rev})
    assert r.status_code == 400 and "reason" in r.get_json()["message"]
    r = client.post("/api/filters/ApiCounting/approve", headers=auth, json={"revision": rev, "note": "ok"})
    assert r.status_code == 200, r.get_json()
    review = r.get_json()["data"]["review"]
    assert review["decision"] == "approved" and review["note"] == "ok" and review["by"]
    assert client.get("/api/filters/ApiCounting").get_json()["data"]["review"]["decision"] == "approved"
    r = client.post("/api/filters/ApiCounting/enable", headers=auth, json={"revision": rev})
    assert r.status_code == 200 and r.get_json()["data"]["status"] == "enabled"
    page = client.get("/filters/ApiCounting").get_data(as_text=True)
    assert "Review: <b>approved</b> by " + review["by"] in page
    listing = client.get("/filters").get_data(as_text=True)
    row = listing[listing.index(">ApiCounting</a>"):]
    assert row[: row.index("</tr>")].count("approved by " + review["by"]) == 1
    assert client.get("/api/filters/ApiCounting").get_json()["data"]["status"] == "enabled"

    # test on stored loci: the tags it reports are exactly those the store says it should give
    loci = [x for batch in store.iter_loci() for x in batch]
    multi = [x for x in loci if len(x.alerts) > 1][:5]
    single = [x for x in loci if len(x.alerts) == 1][:5]
    assert multi and single
    ids = [x.locus_id for x in multi + single]
    r = client.post("/api/filters/test", headers=auth, json={"code": COUNTING_CODE, "locus_ids": ids})
    assert r.status_code == 200, r.get_json()
    rep = r.get_json()["data"]
    assert rep["loci"] == len(ids) and rep["runs"] == len(ids) and rep["error_count"] == 0
    assert rep["tags"] == {"api_multi": len(multi)}
    assert set(rep["tag_examples"]["api_multi"]) <= {x.locus_id for x in multi}

    # test on uploaded packets: each packet ingested in turn, the filter run after each
    files = sorted((ZTF_DIR / "fink-datasim").glob("*.avro"))[:3]
    assert files
    data = {"code": COUNTING_CODE, "alerts": [(io.BytesIO(f.read_bytes()), f.name) for f in files]}
    r = client.post("/api/filters/test", data=data, content_type="multipart/form-data", headers=user_auth)
    assert r.status_code == 200, r.get_json()
    rep = r.get_json()["data"]
    assert rep["runs"] == len(files) and rep["error_count"] == 0

    bad = client.post("/api/filters/test", headers=auth, json={"code": COUNTING_CODE})
    assert bad.status_code == 400 and "alerts" in bad.get_json()["message"]
    assert client.post("/api/filters/test", headers=auth,
                       json={"code": COUNTING_CODE, "locus_ids": ["ALBnope"]}).status_code == 404
    assert client.post("/api/filters/test", headers=auth,
                       json={"code": "def f(:", "locus_ids": ids}).status_code == 422

    # replay: a dry run over every stored locus, nothing written
    before = {x.locus_id: set(x.user_tags) for x in loci}
    r = client.post("/api/filters/ApiCounting/backfill", headers=auth, json={"limit": 100000})
    assert r.status_code == 200, r.get_json()
    rep = r.get_json()["data"]
    assert rep["dry_run"] is True and rep["loci"] == len(loci)
    assert rep["tags"].get("api_multi", 0) == sum(len(x.alerts) > 1 for x in loci)
    after = {x.locus_id: set(x.user_tags) for batch in store.iter_loci() for x in batch}
    assert after == before
    assert client.post("/api/filters/ApiCounting/backfill", headers=auth,
                       json={"since": "not a date"}).status_code == 400

    r = client.post("/api/filters/ApiCounting/disable", headers=auth, json={"reason": "done testing"})
    assert r.status_code == 200 and r.get_json()["data"]["status"] == "disabled"
    assert client.get("/api/filters/ApiCounting").get_json()["data"]["status"] == "disabled"


def test_metrics_route_counts_requests_and_reports_the_store(client, store):
    client.get("/api/status")
    client.get("/v2/loci/ALBnope")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'albireo_http_requests_total{endpoint="/api/status",method="GET",status="200"}' in text
    assert 'albireo_http_requests_total{endpoint="/v2/loci/<locus_id>",method="GET",status="404"}' in text
    assert f'albireo_store_rows{{table="loci"}} {float(store.counts()["loci"])}' in text
    assert 'albireo_http_request_seconds_count{endpoint="/api/status"}' in text


def test_random_loci_are_drawn_from_the_whole_index(client, app):
    index = app.extensions["albireo"].index
    every = index.count()
    seen = set()
    for _ in range(20):
        r = client.get("/v2/loci/random", query_string={"n": 3})
        assert r.status_code == 200
        ids = [d["id"] for d in r.get_json()["data"]]
        assert len(ids) == len(set(ids)) == min(3, every) and all(index.get(i) for i in ids)
        seen |= set(ids)
    assert len(seen) > min(3, every)  # not one fixed page
    a = client.get("/v2/loci/random", query_string={"n": 5, "seed": 7}).get_json()["data"]
    assert a == client.get("/v2/loci/random", query_string={"n": 5, "seed": 7}).get_json()["data"]
    assert client.get("/v2/loci/random?n=0").status_code == 400


BACKFILL_CODE = """
from broker.filtering.contract import BaseFilter


class ApiBackfill(BaseFilter):
    OUTPUT_LOCUS_TAGS = [{"name": "api_bf_many", "description": "more than ten alerts"}]
    OUTPUT_LOCUS_PROPERTIES = [{"name": "api_bf_n", "type": "int", "description": "alerts seen"}]

    def _run(self, locus):
        locus.set_property("api_bf_n", len(locus.alerts))
        if len(locus.alerts) > 10:
            locus.tag("api_bf_many")
"""


def test_filter_backfill_compare_and_write_over_http(client, store, admin_auth, user_auth):
    """Comparing needs a user key; writing an admin key; what is written is what the store then holds."""
    r = client.post("/api/filters", data={"code": BACKFILL_CODE}, headers=user_auth)
    assert r.status_code == 201, r.get_json()
    a = r.get_json()["data"]["revision"]
    r = client.post("/api/filters", data={"code": BACKFILL_CODE.replace("> 10", "> 20")}, headers=user_auth)
    b = r.get_json()["data"]["revision"]
    r = client.post("/api/filters/ApiBackfill/backfill", headers=user_auth, json={"compare": [a, b], "limit": 40})
    assert r.status_code == 200, r.get_json()
    rep = r.get_json()["data"]
    ids = store.locus_ids()[:40]
    n = {lid: len(x.alerts) for lid, x in store.load_loci(ids).items()}
    assert rep["totals"]["loci"] == len(ids)
    assert rep["totals"]["tags_lost"].get("api_bf_many", 0) == sum(10 < v <= 20 for v in n.values())
    assert rep["totals"]["tags_gained"] == {} and rep["totals"]["properties_changed"] == {}
    for bad in ({"compare": a}, {"compare": [a]}, {"publish": True}, {"write": "maybe"},
                {"compare": [a, b], "write": True}):
        r = client.post("/api/filters/ApiBackfill/backfill", headers=admin_auth, json=bad)
        assert r.status_code == 400, (bad, r.get_json())
    r = client.post("/api/filters/ApiBackfill/backfill", headers=user_auth, json={"write": True})
    assert r.status_code == 403
    r = client.post("/api/filters/ApiBackfill/backfill", headers=admin_auth, json={"resume": "bf-nope"})
    assert r.status_code == 404 and "no backfill run" in r.get_json()["message"]
    r = client.post("/api/filters/ApiBackfill/backfill", headers=admin_auth,
                    json={"write": True, "revision": a, "limit": 5})
    assert r.status_code == 200, r.get_json()
    run = r.get_json()["data"]
    assert run["status"] == "done" and run["totals"]["loci"] == 5
    written = store.load_loci(store.locus_ids()[:5])
    for lid, x in written.items():
        assert x.user_properties["api_bf_n"] == n[lid]
        assert ("api_bf_many" in x.user_tags) == (n[lid] > 10)
        assert x.provenance["property:api_bf_n"].backfill_run == run["run_id"]
    assert store.get_backfill_run(run["run_id"])["position"] == 5
