"""The FAIR event catalog on the embedded stack: publish, versions, exports, cone search, metadata, sky maps.

The multi-messenger scenario (``tests/mm_scenario.py``: real ZTF packets moved into an LVK sample
map and around an IceCube circle, their expected coincidences decided by ligo.skymap and astropy,
not by our code) is ingested, then:

1. ``albireo release publish`` freezes catalog v1; every export of v1 is kept as bytes;
2. a new IceCube notice revision (moved centre, smaller circle) is ingested with ``albireo notices
   ingest`` and v2 is published: the neutrino event gets record version 2, the GW event keeps
   version 1, and every export of v1 is the same bytes as before;
3. the exports open in astropy/pyarrow with units and UCDs, pyvo cone-searches a real HTTP server,
   the landing page's JSON-LD expands (pyld) to a schema.org Dataset, the DataCite record
   validates against the kernel-4.3 JSON schema, the sky maps read back in ligo.skymap and mocpy.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from tests import mm_scenario

NU = "IceCube-137840_57034692"
GW = "MS181101ab"
FORMATS = ("fits", "vot", "csv", "ecsv", "parquet", "json")
ENV = {"ALBIREO_EVENT_CATALOG__INCLUDE_TEST": "true"}  # the scenario's GW event is LVK's mock superevent
NEW_CENTER, NEW_RADIUS = (31.3, 21.2), 0.6


def _exports(c, version) -> dict[str, bytes]:
    out = {}
    for table in ("events", "associations"):
        for fmt in FORMATS:
            r = c.get(f"/api/catalog/v1/versions/{version}/{table}.{fmt}")
            assert r.status_code == 200, (table, fmt, r.data[:300])
            out[f"{table}.{fmt}"] = r.data
    return out


def _update_notice(sc) -> bytes:
    """A later revision of the scenario's IceCube notice: moved, tighter."""
    from broker.multimessenger.notice import from_mjd, iso

    nu = json.loads(sc.nu_notice)
    nu = copy.deepcopy(nu)
    nu.update(ra=NEW_CENTER[0], dec=NEW_CENTER[1], ra_dec_error=NEW_RADIUS, record_number=2, alert_type="update",
              alert_datetime=iso(from_mjd(mm_scenario.T_NU + 0.2)))
    return json.dumps(nu).encode()


@pytest.fixture(scope="module")
def published(tmp_path_factory, shared_data):
    """The scenario, catalog v1, a new notice revision, catalog v2; v1's exports before and after."""
    from broker.cli import main as cli
    from web import create_app

    work = tmp_path_factory.mktemp("mm-catalog")
    sc, cfg = mm_scenario.embedded_workdir(shared_data, work / "demo", extra_notices=False)
    cfg.event_catalog.include_test = True
    app = create_app(cfg, catalogs=None)
    c = app.test_client()
    assert c.get("/api/catalog/v1/versions").get_json()["meta"]["count"] == 0
    r1 = CliRunner().invoke(cli, ["release", "publish", "--workdir", str(work / "demo"), "--note", "first"], env=ENV)
    assert r1.exit_code == 0, r1.output
    assert "published albireo:catalog/v1: 2 event(s)" in r1.output
    before = _exports(c, 1)
    live_before = c.get(f"/api/catalog/v1/events/{NU}?version=live").get_json()
    (work / "update.json").write_bytes(_update_notice(sc))
    ing = CliRunner().invoke(cli, ["notices", "ingest", str(work / "update.json"), "--workdir", str(work / "demo")])
    assert ing.exit_code == 0, ing.output
    live_after = c.get(f"/api/catalog/v1/events/{NU}?version=live").get_json()
    r2 = CliRunner().invoke(cli, ["release", "publish", "--workdir", str(work / "demo")], env=ENV)
    assert r2.exit_code == 0, r2.output
    after = _exports(c, 1)
    return {"sc": sc, "cfg": cfg, "app": app, "work": work, "before": before, "after": after, "r2": r2.output,
            "live_before": live_before, "live_after": live_after}


@pytest.fixture()
def client(published):
    return published["app"].test_client()


def test_a_new_revision_makes_a_new_record_version_and_never_rewrites_v1(published, client):
    from broker.assemble import open_store
    from broker.ports import CatalogConflict

    assert published["after"] == published["before"]  # every table, every format: byte for byte
    import hashlib

    sums = client.get("/api/catalog/v1/versions/1").get_json()["meta"]["checksums"]
    assert sums == {k: hashlib.sha256(v).hexdigest() for k, v in published["after"].items()}  # as published
    r = client.get("/api/catalog/v1/versions/1/events.fits")
    assert r.headers["X-Albireo-Checksum"] == "ok" and r.headers["X-Albireo-Published-SHA256"] == sums["events.fits"]
    assert published["live_before"]["meta"]["live_changed"] is False  # v1 froze exactly the live state
    assert published["live_after"]["meta"]["live_changed"] is True
    assert "1 updated, 1 unchanged" in published["r2"]
    rels = client.get("/api/catalog/v1/versions").get_json()["data"]
    assert [r["version"] for r in rels] == [1, 2] and rels[1]["changes"]["updated"] == [NU]
    assert rels[0]["note"] == "first" and all(r["license"] == "CC-BY-4.0" and r["pipeline_version"] for r in rels)
    v1 = {r["event_id"]: r for r in client.get("/api/catalog/v1/versions/1").get_json()["data"]}
    v2 = {r["event_id"]: r for r in client.get("/api/catalog/v1/versions/2").get_json()["data"]}
    assert v1[NU]["version"] == 1 and v2[NU]["version"] == 2 and v1[GW]["pid"] == v2[GW]["pid"] == f"albireo:event/{GW}/v1"
    assert (v1[NU]["ra"], v1[NU]["dec"]) == mm_scenario.NU_CENTER and (v2[NU]["ra"], v2[NU]["dec"]) == NEW_CENTER
    # provenance: which notice revision each version reflects
    p1, p2 = v1[NU]["provenance"], v2[NU]["provenance"]
    assert p1["notice_revision"] == 1 and p2["notice_revision"] == 2 and p1["notice_id"] != p2["notice_id"]
    assert p2["localization_notice_id"] == p2["notice_id"] and len(p2["notices"]) == 2
    assert p2["reconstruction"]["kind"] == "notice" and p2["reconstruction"]["shape"] == "circle"
    import broker

    assert p2["pipeline_version"] == broker.__version__ and v2[NU]["created"] == rels[1]["published"]
    # the store itself refuses to rewrite a published version
    store = open_store(published["cfg"], create=False)
    try:
        old = store.catalog_records(NU)[0]
        assert store.put_catalog_record(old) is False  # a replay of the same bytes is fine
        with pytest.raises(CatalogConflict):
            store.put_catalog_record(dict(old, ra=0.0))
        assert store.catalog_records(NU)[0] == old
    finally:
        store.close()


def _expected_loci(store, center, radius) -> set[str]:
    """Loci with an in-window detection within ``radius`` of ``center`` (astropy), independent of our code."""
    from astropy.coordinates import SkyCoord

    c0 = SkyCoord(*center, unit="deg")
    t0 = mm_scenario.T_NU
    out = set()
    for batch in store.iter_loci():
        for x in batch:
            pos = [(a.ra, a.dec) for a in x.alerts if np.isfinite(a.ra) and t0 - 1 <= a.mjd <= t0 + 14]
            if pos and np.any(SkyCoord([p[0] for p in pos], [p[1] for p in pos], unit="deg").separation(c0).deg
                              <= radius):
                out.add(x.locus_id)
    return out


def test_records_follow_icecat_and_the_associations_are_the_expected_loci(published, client):
    from broker.assemble import open_store

    store = open_store(published["cfg"], create=False)
    try:
        want1 = _expected_loci(store, mm_scenario.NU_CENTER, mm_scenario.NU_RADIUS)
        want2 = _expected_loci(store, NEW_CENTER, NEW_RADIUS)
    finally:
        store.close()
    a1 = client.get(f"/api/catalog/v1/events/{NU}/associations?version=1").get_json()
    a2 = client.get(f"/api/catalog/v1/events/{NU}/associations?version=2").get_json()
    assert {a["locus_id"] for a in a1["data"]} == want1 and {a["locus_id"] for a in a2["data"]} == want2
    assert want1 != want2 and want2  # the revision changed what is associated
    for a in a2["data"]:
        assert a["pid"] == f"albireo:assoc/{NU}/{a['locus_id']}/v2" and 0 < a["contour_level"] <= 90
        from astropy.coordinates import SkyCoord

        d = SkyCoord(a["ra"], a["dec"], unit="deg").separation(SkyCoord(*NEW_CENTER, unit="deg")).deg
        assert a["distance_deg"] == pytest.approx(d, abs=1e-5)
    rec = client.get(f"/api/catalog/v1/events/{NU}").get_json()["data"]  # the latest frozen version
    assert rec["version"] == 2 and rec["n_associations"] == len(want2)
    # IceCat-1's asymmetric 90% errors for a 90% circle: ±r in Dec, ±r/cos(dec) in RA
    assert rec["dec_err_plus"] == rec["dec_err_minus"] == pytest.approx(NEW_RADIUS, abs=1e-4)
    assert rec["ra_err_plus"] == pytest.approx(NEW_RADIUS / math.cos(math.radians(NEW_CENTER[1])), abs=1e-4)
    assert rec["area90"] == pytest.approx(2 * math.pi * (1 - math.cos(math.radians(NEW_RADIUS))) * (180 / math.pi) ** 2,
                                          rel=1e-3)
    sent = json.loads(published["sc"].nu_notice)
    assert rec["energy"] == pytest.approx(sent["nu_energy"]) and rec["signalness"] == pytest.approx(sent["p_astro"])
    assert rec["far"] == pytest.approx(sent["far"] * 365.25 * 86400)  # GCN's Hz as IceCat's yr^-1
    gw = client.get(f"/api/catalog/v1/events/{GW}").get_json()["data"]
    assert gw["localization_shape"] == "map" and gw["test"] is True and gw["area90"] > 0
    assert gw["dec_err_plus"] > 0 and gw["ra_err_minus"] > 0


def test_exports_carry_units_ucds_and_the_licence(published):
    import pyarrow.parquet as pq
    from astropy.io import fits
    from astropy.io.votable import parse
    from astropy.table import Table

    ex = published["before"]
    vot = parse(io.BytesIO(ex["events.vot"]))
    fields = {f.name: f for f in vot.get_first_table().fields}
    assert fields["ra"].ucd == "pos.eq.ra;meta.main" and str(fields["ra"].unit) == "deg"
    assert fields["area90"].ucd == "phys.angArea" and str(fields["area90"].unit) == "deg2"
    assert str(fields["far"].unit) == "1 / yr" and fields["pid"].ucd == "meta.id;meta.main"
    infos = {i.name: i.value for i in vot.resources[0].infos}
    assert infos["license"] == "CC-BY-4.0" and infos["catalog_pid"] == "albireo:catalog/v1"
    t = Table.read(io.BytesIO(ex["events.vot"]), format="votable")
    assert t["dec"].unit == "deg" and set(t["event_id"]) == {NU, GW}
    with fits.open(io.BytesIO(ex["events.fits"])) as h:
        hdr = h[1].header
        assert hdr["LICENSE"] == "CC-BY-4.0" and hdr["CATVERS"] == "1"
        names = [hdr[f"TTYPE{i}"] for i in range(1, hdr["TFIELDS"] + 1)]
        i_ra = names.index("ra") + 1
        assert hdr[f"TUNIT{i_ra}"] == "deg" and hdr[f"TUCD{i_ra}"] == "pos.eq.ra;meta.main"
    ft = Table.read(io.BytesIO(ex["events.fits"]))
    assert ft["area90"].unit == "deg2"
    pt = Table.read(io.BytesIO(ex["associations.parquet"]), format="parquet")
    assert pt["contour_area"].unit == "deg2" and pt["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    schema = pq.read_schema(io.BytesIO(ex["associations.parquet"]))
    assert schema.field("distance_deg").metadata[b"unit"] == b"deg"
    assert schema.field("distance_deg").metadata[b"ucd"] == b"pos.angDistance" and schema.metadata[b"license"] == b"CC-BY-4.0"
    et = Table.read(ex["associations.ecsv"].decode(), format="ascii.ecsv")
    assert et["contour_area"].unit == "deg2" and et["credible_level"].meta["ucd"] == "stat.probability"
    assert len(et) == len(pt) == len(Table.read(ex["associations.csv"].decode(), format="ascii.csv")) > 0
    assert all(0 < v <= 0.9 for v in et["credible_level"])
    js = json.loads(ex["events.json"])
    assert js["meta"]["license"] == "CC-BY-4.0" and {c["name"] for c in js["meta"]["columns"]} >= {"ra", "far"}


def test_export_responses_state_the_licence(client):
    r = client.get("/api/catalog/v1/versions/latest/events.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Link"] == '<https://creativecommons.org/licenses/by/4.0/>; rel="license"'
    assert r.headers["X-Albireo-Catalog-Version"] == "2" and 'albireo-events-v2-events.csv' in r.headers["Content-Disposition"]
    live = client.get("/api/catalog/v1/versions/live/events.csv")
    assert live.status_code == 200 and live.headers["X-Albireo-Catalog-Version"] == "live"


@pytest.fixture(scope="module")
def http_server(published):
    """The app on a real socket (werkzeug in a thread, a free port), for clients that speak HTTP."""
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, published["app"], threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    t.join(timeout=10)


def test_pyvo_cone_searches_the_catalog_over_http(http_server):
    import pyvo
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    scs = pyvo.dal.SCSService(f"{http_server}/api/catalog/scs")
    res = scs.search(pos=SkyCoord(31.0 * u.deg, 21.0 * u.deg), radius=1.0 * u.deg)
    assert len(res) == 1
    t = res.to_table()
    assert res.fieldname_with_ucd("ID_MAIN") == "pid" and res.fieldname_with_ucd("POS_EQ_RA_MAIN") == "ra"
    assert t["pid"][0] == f"albireo:event/{NU}/v2" and (float(t["ra"][0]), float(t["dec"][0])) == NEW_CENTER
    assert t["ra"].unit == "deg"
    none = scs.search(pos=SkyCoord(100 * u.deg, -40 * u.deg), radius=1 * u.deg)
    assert len(none) == 0
    both = scs.search(pos=SkyCoord(0 * u.deg, 90 * u.deg), radius=180 * u.deg, verbosity=1)
    assert sorted(both.to_table()["pid"]) == sorted([f"albireo:event/{NU}/v2", f"albireo:event/{GW}/v1"])
    assert set(both.to_table().colnames) == {"pid", "distance", "ra", "dec"}
    v1 = pyvo.dal.SCSService(f"{http_server}/api/catalog/scs?release=1").search(
        pos=SkyCoord(31.0 * u.deg, 21.0 * u.deg), radius=0.2 * u.deg)
    assert [str(p) for p in v1.to_table()["pid"]] == [f"albireo:event/{NU}/v1"]  # v1's centre, not v2's
    # pyvo checks positions itself; a parameter only the service checks shows its error reaches pyvo's caller
    with pytest.raises(pyvo.dal.DALQueryError, match="no catalog version 42"):
        pyvo.dal.SCSService(f"{http_server}/api/catalog/scs?release=42").search(pos=(10.0, 10.0), radius=1.0)


def test_cone_search_errors_are_scs_error_votables(client):
    from astropy.io.votable import parse

    for q, word in (("RA=abc&DEC=1&SR=1", "RA"), ("RA=1&DEC=1", "SR"), ("RA=1&DEC=1&SR=-1", "SR"),
                    ("RA=nan&DEC=1&SR=1", "RA"), ("RA=1&DEC=1&SR=1&VERB=7", "VERB"),
                    ("RA=1&DEC=1&SR=1&release=99", "no catalog version 99"), ("RA=" + "9" * 5000 + "x&DEC=1&SR=1", "RA")):
        r = client.get(f"/api/catalog/scs?{q}")
        assert r.status_code == 200 and r.mimetype == "text/xml"  # SCS 1.03: the error is the VOTable
        vot = parse(io.BytesIO(r.data))
        err = [i for i in vot.infos if i.name == "Error"]
        assert len(err) == 1 and word in err[0].value, (q, err)


def _jsonld(html: str) -> dict:
    m = re.search(r'<script type="application/ld\+json" id="dataset-jsonld">(.*?)</script>', html, re.S)
    assert m, "no JSON-LD on the page"
    return json.loads(m.group(1))


def test_landing_page_embeds_a_schema_org_dataset(client):
    from pyld import jsonld

    html = client.get(f"/events/{NU}").data.decode()
    doc = _jsonld(html)
    assert doc["@context"] == "https://schema.org" and doc["@type"] == "Dataset"
    for prop in ("name", "identifier", "description", "license", "creator", "datePublished", "version", "distribution",
                 "spatialCoverage", "temporalCoverage", "isBasedOn", "isPartOf"):
        assert doc.get(prop), prop
    assert doc["identifier"][0] == f"albireo:event/{NU}/v2" and doc["version"] == "2"
    assert doc["license"] == "https://creativecommons.org/licenses/by/4.0/"
    assert doc["isPartOf"]["identifier"] == ["albireo:catalog/v2"]
    assert {n["identifier"] for n in doc["isBasedOn"] if n["@type"] == "CreativeWork"} == set(
        client.get(f"/api/catalog/v1/events/{NU}").get_json()["data"]["provenance"]["notices"])
    # every distribution is served, in the encoding it claims
    for d in doc["distribution"]:
        path = d["contentUrl"].replace("http://localhost", "")
        r = client.get(path)
        assert r.status_code == 200 and r.mimetype == d["encodingFormat"], (path, r.status_code, r.mimetype)
    # a JSON-LD processor reads it as a schema.org Dataset. schema.org's context is fetched by crawlers;
    # offline, the loader serves its core (its @vocab), which is what maps these terms to schema.org IRIs.
    def loader(url, options=None):
        assert url.rstrip("/") in ("https://schema.org", "http://schema.org"), url
        return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
                "document": {"@context": {"@vocab": "https://schema.org/"}}}

    expanded = jsonld.expand(doc, {"documentLoader": loader})
    assert len(expanded) == 1 and expanded[0]["@type"] == ["https://schema.org/Dataset"]
    node = expanded[0]
    for prop in ("name", "license", "creator", "distribution", "spatialCoverage", "temporalCoverage", "isBasedOn"):
        assert f"https://schema.org/{prop}" in node, prop
    dl = node["https://schema.org/distribution"][0]
    assert dl["@type"] == ["https://schema.org/DataDownload"] and "https://schema.org/contentUrl" in dl
    assert 'rel="license"' in html and 'id="catalog-pid"' in html and f"albireo:event/{NU}/v2" in html
    assert 'id="catalog-versions"' in html and "?version=1" in html and 'class="catalog-export"' in html
    assert 'id="reconstruction"' in html and "Outgoing alerts" in html  # alerts still linked
    old = _jsonld(client.get(f"/events/{NU}?version=1").data.decode())
    assert old["version"] == "1" and old["identifier"][0] == f"albireo:event/{NU}/v1"


def test_datacite_record_validates_against_the_kernel_4_schema(published, client):
    from datacite import schema43

    doc = client.get(f"/api/catalog/v1/events/{NU}/datacite.json").get_json(force=True)
    assert schema43.validate(doc)
    assert doc["types"]["resourceTypeGeneral"] == "Dataset" and doc["version"] == "2"
    assert doc["rightsList"][0]["rightsIdentifier"] == "cc-by-4.0" and doc["publicationYear"].isdigit()
    rel = {(r["relationType"], r["relatedIdentifier"].rsplit("/", 2)[-1]) for r in doc["relatedIdentifiers"]}
    assert ("IsNewVersionOf", "v1") in rel
    assert {d["dateType"] for d in doc["dates"]} >= {"Created", "Issued", "Collected"}
    assert "RA 31.3000 deg" in doc["geoLocations"][0]["geoLocationPlace"]
    old = client.get(f"/api/catalog/v1/events/{NU}/datacite.json?version=1").get_json(force=True)
    assert schema43.validate(old) and ("IsPreviousVersionOf", "v2") in {
        (r["relationType"], r["relatedIdentifier"].rsplit("/", 2)[-1]) for r in old["relatedIdentifiers"]}
    # with a DOI prefix configured, the record carries its DOI (what DataCite's API mints from)
    from web import create_app

    cfg = copy.deepcopy(published["cfg"])
    cfg.event_catalog.doi_prefix = "10.5281"
    with_doi = create_app(cfg, catalogs=None).test_client()
    d = with_doi.get(f"/api/catalog/v1/events/{NU}/datacite.json").get_json(force=True)
    assert schema43.validate(d) and d["identifiers"][0] == {"identifier": f"10.5281/albireo.event.{NU}.v2",
                                                            "identifierType": "DOI"}


def test_sky_maps_are_multi_order_fits_that_ligo_skymap_and_mocpy_read(published, client, tmp_path, shared_data):
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.table import Table
    from ligo.skymap.io import read_sky_map
    from ligo.skymap.postprocess import crossmatch
    from mocpy import MOC

    for version, center, radius in ((1, mm_scenario.NU_CENTER, mm_scenario.NU_RADIUS), (2, NEW_CENTER, NEW_RADIUS)):
        r = client.get(f"/api/catalog/v1/events/{NU}/skymap.multiorder.fits?version={version}")
        assert r.status_code == 200 and r.mimetype == "application/fits"
        path = tmp_path / f"nu-v{version}.fits"
        path.write_bytes(r.data)
        m = read_sky_map(str(path), moc=True)
        assert m.meta["objid"] == NU and fits.getheader(path, 1)["ORDERING"] == "NUNIQ"
        assert fits.getheader(path, 1)["LICENSE"] == "CC-BY-4.0"
        cm = crossmatch(m, SkyCoord(*center, unit="deg"), contours=(0.9,))
        cap = 2 * math.pi * (1 - math.cos(math.radians(radius))) * (180 / math.pi) ** 2
        assert cm.contour_areas[0] == pytest.approx(cap, rel=0.01)  # the 90% circle as the notice gave it
        moc = MOC.from_multiordermap_fits_file(path, cumul_to=0.9)
        assert moc.contains_lonlat(center[0] * u.deg, center[1] * u.deg)[0]
        far = SkyCoord(*center, unit="deg").directional_offset_by(0 * u.deg, 2 * radius * u.deg)
        assert not moc.contains_lonlat(far.ra, far.dec)[0]
    r = client.get(f"/api/catalog/v1/events/{GW}/skymap.multiorder.fits")
    (tmp_path / "gw.fits").write_bytes(r.data)
    got = read_sky_map(str(tmp_path / "gw.fits"), moc=True)
    orig = Table.read(shared_data / "lvk" / "bayestar.multiorder.fits")
    srt = np.argsort(orig["UNIQ"])
    assert np.array_equal(np.asarray(got["UNIQ"]), np.asarray(orig["UNIQ"])[srt])  # LVK's own map, cell for cell
    assert np.allclose(np.asarray(got["PROBDENSITY"]), np.asarray(orig["PROBDENSITY"])[srt], rtol=1e-6)


def test_identifiers_resolve_and_hostile_requests_get_clear_errors(client):
    r = client.get(f"/api/catalog/v1/resolve/albireo:event/{NU}/v1")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/events/{NU}?version=1")
    r = client.get(f"/api/catalog/v1/resolve/albireo:assoc/{NU}/ALBxyz/v2")
    assert r.status_code == 302 and "/associations?version=2" in r.headers["Location"]
    assert client.get("/api/catalog/v1/resolve/albireo:catalog/v2").headers["Location"].endswith("/versions/2")
    for path, code in (("/api/catalog/v1/resolve/doi:10.1/x", 400), ("/api/catalog/v1/resolve/albireo:event/", 400),
                       ("/api/catalog/v1/resolve/albireo:event/nope/v1", 404),
                       (f"/api/catalog/v1/resolve/albireo:event/{NU}/v9", 404),
                       ("/api/catalog/v1/resolve/albireo:catalog/v77", 404), ("/api/catalog/v1/versions/77", 404),
                       ("/api/catalog/v1/versions/-1", 404), ("/api/catalog/v1/versions/%00", 400),
                       ("/api/catalog/v1/versions/1/secrets.csv", 404), ("/api/catalog/v1/versions/1/events.exe", 400),
                       (f"/api/catalog/v1/events/{NU}?version=abc", 400), (f"/api/catalog/v1/events/{NU}?version=9", 404),
                       ("/api/catalog/v1/events/nope", 404), ("/api/catalog/v1/events/nope/skymap.multiorder.fits", 404),
                       (f"/events/{NU}?version=x", 400), (f"/api/catalog/v1/events/{'x' * 5000}/datacite.json", 404)):
        r = client.get(path)
        assert r.status_code == code, (path, r.status_code, r.data[:200])
        if path.startswith("/api/"):
            assert r.get_json()["message"]
    root = client.get("/api/catalog/v1").get_json()["data"]
    assert root["identifier_scheme"]["event"] == "albireo:event/%3Cevent_id%3E/v1" and root["latest_version"] == 2


def test_identifier_scheme_round_trips_awkward_ids():
    from broker.multimessenger.catalog.identifiers import Identifiers

    ids = Identifiers("albireo", "10.5281", "12345")
    for eid in ("S230518h", "IceCube-137840_57034692", "odd/id with space", "ünï"):
        pid = ids.event(eid, 3)
        assert " " not in pid and pid.count("/") == 2
        assert ids.parse(pid) == {"kind": "event", "event_id": eid, "locus_id": None, "version": 3}
        assert ids.parse(ids.ark(pid))["event_id"] == eid
    assert ids.parse(ids.association("S1", "ALB1"))["locus_id"] == "ALB1"
    assert ids.doi(4) == "10.5281/albireo.events.v4"
    for bad in ("other:event/x/v1", "albireo:event/a/b/c", "albireo:catalog/x", "albireo:thing/x"):
        with pytest.raises(ValueError):
            ids.parse(bad)


def test_release_cli_lists_shows_and_exports(published, tmp_path):
    from astropy.io.votable import parse

    from broker.cli import main as cli

    work = published["work"] / "demo"
    r = CliRunner().invoke(cli, ["release", "list", "--workdir", str(work)], env=ENV)
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("v1") and "first" in r.output
    r = CliRunner().invoke(cli, ["release", "show", "1", "--workdir", str(work)], env=ENV)
    assert r.exit_code == 0 and f"albireo:event/{NU}/v1" in r.output
    out = tmp_path / "v1.vot"
    r = CliRunner().invoke(cli, ["release", "export", "1", "--format", "vot", "--out", str(out), "--workdir", str(work)],
                           env=ENV)
    assert r.exit_code == 0 and out.read_bytes() == published["before"]["events.vot"]
    assert parse(str(out)).get_first_table().array.shape[0] == 2
    bad = CliRunner().invoke(cli, ["release", "show", "42", "--workdir", str(work)], env=ENV)
    assert bad.exit_code != 0 and "no catalog version 42" in bad.output


@pytest.mark.parametrize("junk", ["%00", "..", "x" * 3000, "%ff%fe", "' OR 1=1 --", "<script>", "-1", "1e309", "v1"])
def test_no_catalog_route_answers_junk_with_a_500(client, junk):
    """Every catalog route, with junk in every path parameter and query argument: a 4xx or a clear answer."""
    app = client.application
    rules = [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/catalog")]
    assert len(rules) >= 12
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?\w+>", junk, rule)
        for query in ("", f"?version={junk}", f"?release={junk}&RA={junk}&DEC=1&SR=1"):
            r = client.get(path + query)
            assert r.status_code < 500, (path + query, r.status_code, r.data[:200])


def test_the_catalog_page_lists_the_versions_with_their_exports(client):
    html = client.get("/catalog").data.decode()
    assert 'id="catalog-releases"' in html and "albireo:catalog/v1" in html and "albireo:catalog/v2" in html
    assert 'rel="license"' in html and "/api/catalog/scs" in html
    links = re.findall(r'class="catalog-export" href="([^"]+)"', html)
    assert len(links) == 8 and all(client.get(u).status_code == 200 for u in links)
    assert 'id="catalog-link"' in client.get("/events").data.decode()


def test_published_versions_have_their_own_datacite_and_dataset_records(published, client):
    from datacite import schema43

    d = client.get("/api/catalog/v1/versions/1/datacite.json").get_json(force=True)
    assert schema43.validate(d) and d["version"] == "1" and d["identifiers"][0]["identifier"] == "albireo:catalog/v1"
    parts = {r["relatedIdentifier"].rsplit("/resolve/", 1)[-1] for r in d["relatedIdentifiers"] if r["relationType"] == "HasPart"}
    assert parts == {f"albireo:event/{NU}/v1", f"albireo:event/{GW}/v1"}
    assert ("IsPreviousVersionOf", "2") in {(r["relationType"], r["relatedIdentifier"].rsplit("/", 1)[-1])
                                           for r in d["relatedIdentifiers"]}
    ld = client.get("/api/catalog/v1/versions/2/jsonld").get_json(force=True)
    assert ld["@type"] == "Dataset" and ld["version"] == "2" and len(ld["hasPart"]) == 2
    for dist in ld["distribution"][:3]:
        r = client.get(dist["contentUrl"].replace("http://localhost", ""))
        assert r.status_code == 200 and r.mimetype == dist["encodingFormat"]
    assert client.get("/api/catalog/v1/versions/live/datacite.json").status_code == 400
    from web import create_app

    cfg = copy.deepcopy(published["cfg"])
    cfg.event_catalog.doi_prefix = "10.5281"
    # a DOI prefix configured after publication does not rewrite a version: its DOI is what it was published with
    assert create_app(cfg, catalogs=None).test_client().get("/api/catalog/v1/versions/1/datacite.json").get_json(
        force=True)["identifiers"][0]["identifierType"] == "URI"


def test_zz_a_retraction_is_a_new_version_and_everything_published_stays(published, client, http_server):
    """Last (it changes the module's state): retract the neutrino, publish v3; v1 and v2 still resolve and export."""
    import pyvo
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from broker.cli import main as cli

    work = published["work"]
    (work / "retraction.json").write_bytes(published["sc"].nu_retraction)
    ing = CliRunner().invoke(cli, ["notices", "ingest", str(work / "retraction.json"), "--workdir", str(work / "demo")])
    assert ing.exit_code == 0, ing.output
    v2_before = {k: client.get(f"/api/catalog/v1/versions/2/{k}").data for k in ("events.vot", "associations.csv")}
    r = CliRunner().invoke(cli, ["release", "publish", "--workdir", str(work / "demo")], env=ENV)
    assert r.exit_code == 0 and "published albireo:catalog/v3" in r.output, r.output
    rec = client.get(f"/api/catalog/v1/events/{NU}").get_json()["data"]
    assert rec["version"] == 3 and rec["status"] == "retracted" and rec["ra"] is None and rec["associations"] == []
    assert rec["provenance"]["notice_kind"] == "RETRACTION"
    assert _exports(client, 1) == published["before"]
    assert {k: client.get(f"/api/catalog/v1/versions/2/{k}").data for k in ("events.vot", "associations.csv")} == v2_before
    assert client.get(f"/api/catalog/v1/events/{NU}/skymap.multiorder.fits?version=3").status_code == 404
    assert client.get(f"/api/catalog/v1/events/{NU}/skymap.multiorder.fits?version=2").status_code == 200
    assert client.get(f"/api/catalog/v1/resolve/albireo:event/{NU}/v2").status_code == 302
    scs = pyvo.dal.SCSService(f"{http_server}/api/catalog/scs")
    assert len(scs.search(pos=SkyCoord(*NEW_CENTER, unit="deg"), radius=1 * u.deg)) == 0  # no position any more
    old = pyvo.dal.SCSService(f"{http_server}/api/catalog/scs?release=2")
    assert len(old.search(pos=SkyCoord(*NEW_CENTER, unit="deg"), radius=1 * u.deg)) == 1
    from datacite import schema43

    assert schema43.validate(client.get(f"/api/catalog/v1/events/{NU}/datacite.json").get_json(force=True))
    page = client.get(f"/events/{NU}").data.decode()
    assert _jsonld(page)["version"] == "3" and "spatialCoverage" not in _jsonld(page)
