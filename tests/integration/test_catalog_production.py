"""The FAIR catalog on Kafka + Cassandra + Elasticsearch: publish, export, cone search, sky map, immutability.

Loci around an IceCube track are stored in a Cassandra keyspace and an Elasticsearch index of this
test's own; the track's notice and its update (a later revision, moved and tighter) are replayed
to a notice topic of its own and consumed by a real notice worker (``kafka_notice_worker``). The
catalog is published over that store and index (v1 after the track, v2 after the update); the
portal built over them serves the exports, the sky map and the cone search, which pyvo queries
over HTTP. v1's exports must be the same bytes after v2. The servers are the shared ones.
"""

from __future__ import annotations

import io
import math
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from broker.config import load_config
from broker.multimessenger.notice import to_mjd
from broker.multimessenger.parse import parse_notice

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "notices"
EVENT = "IceCube-137840_57034692"
FORMATS = ("fits", "vot", "csv", "parquet", "json")


def _up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cfg(tmp_path):
    if not (_up(9092) and _up(9042) and _up(9200)):
        pytest.skip("the shared Kafka (9092), Cassandra (9042) and Elasticsearch (9200) are not reachable")
    from broker.ops import services

    run = uuid.uuid4().hex[:10]
    c = load_config(env={})
    ends = services.endpoints()
    c.kafka.bootstrap_servers = ends["kafka"]
    c.store.backend, c.store.keyspace = "cassandra", f"fair_{run}"
    c.search.backend, c.search.index_name = "elasticsearch", f"fair-{run}"
    c.search.outbox_path = str(tmp_path / "outbox.sqlite")
    c.catalogs.enabled, c.filters.builtin, c.filters.refresh_s = False, [], 0.0
    mm = c.multimessenger
    mm.notice_topics, mm.group_id = [f"fair-notices-{run}"], f"fair-g-{run}"
    mm.dead_letter_topic, mm.alert_topic_prefix = f"fair-{run}.dlq", f"fair-{run}.alerts."
    c.kafka.output_prefix = f"fair-{run}.loci."
    mm.download_skymaps = False
    yield c
    from broker.assemble import open_index, open_store

    s = open_store(c)
    s.drop_keyspace()
    s.close()
    ix = open_index(c)
    ix.drop()
    ix.close()


def _consume(cfg, path: Path) -> None:
    from broker.assemble import kafka_notice_worker
    from broker.ops.loadgen import replay

    stats = replay([path], topic=cfg.multimessenger.notice_topics[0], bootstrap=cfg.kafka.bootstrap_servers,
                   progress=False, notices=True)
    assert stats.messages == 1
    with kafka_notice_worker(cfg) as a:
        read, deadline = 0, time.monotonic() + 120
        while read < 1 and time.monotonic() < deadline:
            read += a.worker.run(max_messages=1, idle_timeout_s=8).result.messages
        assert read == 1


def _inside(loci, center, radius, t0) -> set[str]:
    from astropy.coordinates import SkyCoord

    c0 = SkyCoord(*center, unit="deg")
    return {x.locus_id for x in loci if any(
        np.isfinite(a.ra) and t0 - 1 <= a.mjd <= t0 + 14 and c0.separation(SkyCoord(a.ra, a.dec, unit="deg")).deg <= radius
        for a in x.alerts)}


def test_catalog_on_the_production_stack(cfg, tmp_path):
    import pyvo
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io.votable import parse
    from ligo.skymap.io import read_sky_map
    from ligo.skymap.postprocess import crossmatch
    from werkzeug.serving import make_server

    from broker.assemble import open_index, open_index_writer, open_store
    from broker.multimessenger.catalog.versions import CatalogSettings, EventCatalog
    from tests.contract.conftest import make_locus
    from web import create_app

    t0 = to_mjd(parse_notice((DATA / "icecube_gold_track.xml").read_bytes()).created_dt)
    rng = np.random.default_rng(5)
    loci = [make_locus(345.82 + float(dx), 9.01 + float(dy), n=2, mjd0=t0 - 0.5, seed=i)
            for i, (dx, dy) in enumerate(rng.uniform(-0.6, 0.6, (30, 2)))]
    store, index = open_store(cfg), open_index(cfg)
    store.save_batch(loci, [a for x in loci for a in x.alerts])
    writer = open_index_writer(cfg, index)
    writer.write(loci)
    assert writer.close()
    store.close()
    index.close()

    _consume(cfg, DATA / "icecube_gold_track.xml")
    store, index = open_store(cfg), open_index(cfg)
    app = create_app(cfg, store=store, index=index, catalogs=None)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        cat = EventCatalog(store, index, CatalogSettings.from_config(cfg))
        v1 = cat.publish("production v1")
        c = app.test_client()
        before = {(t, f): c.get(f"/api/catalog/v1/versions/1/{t}.{f}").data
                  for t in ("events", "associations") for f in FORMATS}
        assoc1 = {a["locus_id"] for a in c.get(f"/api/catalog/v1/events/{EVENT}/associations").get_json()["data"]}
        assert assoc1 == _inside(loci, (345.82, 9.01), 0.5, t0) and 0 < len(assoc1) < len(loci)

        index.refresh()
        _consume(cfg, DATA / "icecube_gold_track_update.xml")
        # v2 through the command an operator runs, configured for the production stack by environment
        from click.testing import CliRunner

        from broker.cli import main as cli

        env = {"ALBIREO_KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers, "ALBIREO_STORE__BACKEND": "cassandra",
               "ALBIREO_STORE__KEYSPACE": cfg.store.keyspace, "ALBIREO_SEARCH__BACKEND": "elasticsearch",
               "ALBIREO_SEARCH__INDEX_NAME": cfg.search.index_name, "ALBIREO_SEARCH__OUTBOX_PATH": cfg.search.outbox_path}
        out = CliRunner().invoke(cli, ["release", "publish", "--note", "production v2"], env=env)
        assert out.exit_code == 0, out.output
        assert "published albireo:catalog/v2: 1 event(s)" in out.output and "1 updated" in out.output
        v2 = cat.latest_release()
        assert (v1["version"], v2["version"]) == (1, 2) and v2["changes"]["updated"] == [EVENT]
        after = {(t, f): c.get(f"/api/catalog/v1/versions/1/{t}.{f}").data
                 for t in ("events", "associations") for f in FORMATS}
        assert after == before  # byte for byte, on Cassandra
        for t, f in before:  # and the bytes are those published (the release's SHA-256 of each export)
            assert c.get(f"/api/catalog/v1/versions/1/{t}.{f}").headers["X-Albireo-Checksum"] == "ok"
        versions = store.catalog_records(EVENT)
        assert [r["version"] for r in versions] == [1, 2]
        assert versions[0]["provenance"]["notice_revision"] == 0 and versions[1]["provenance"]["notice_revision"] == 1
        assert (versions[1]["ra"], versions[1]["dec"]) == (345.79, 8.97)
        assoc2 = {a["locus_id"] for a in versions[1]["associations"]}
        assert assoc2 == _inside(loci, (345.79, 8.97), 0.42, t0)

        vot = parse(io.BytesIO(before[("events", "vot")]))
        f = {x.name: x for x in vot.get_first_table().fields}
        assert f["ra"].ucd == "pos.eq.ra;meta.main" and str(f["ra"].unit) == "deg"
        assert {i.name: i.value for i in vot.resources[0].infos}["license"] == "CC-BY-4.0"

        scs = pyvo.dal.SCSService(f"{base}/api/catalog/scs")
        res = scs.search(pos=SkyCoord(345.8 * u.deg, 9.0 * u.deg), radius=0.5 * u.deg)
        assert [str(p) for p in res.to_table()["pid"]] == [f"albireo:event/{EVENT}/v2"]
        old = pyvo.dal.SCSService(f"{base}/api/catalog/scs?release=1").search(
            pos=SkyCoord(345.82 * u.deg, 9.01 * u.deg), radius=0.001 * u.deg)
        assert [str(p) for p in old.to_table()["pid"]] == [f"albireo:event/{EVENT}/v1"]
        assert len(scs.search(pos=SkyCoord(10 * u.deg, -50 * u.deg), radius=5 * u.deg)) == 0

        r = c.get(f"/api/catalog/v1/events/{EVENT}/skymap.multiorder.fits")
        (tmp_path / "nu.fits").write_bytes(r.data)
        cm = crossmatch(read_sky_map(str(tmp_path / "nu.fits"), moc=True), SkyCoord(345.79, 8.97, unit="deg"),
                        contours=(0.9,))
        cap = 2 * math.pi * (1 - math.cos(math.radians(0.42))) * (180 / math.pi) ** 2
        assert cm.contour_areas[0] == pytest.approx(cap, rel=0.01)
        page = c.get(f"/events/{EVENT}").data.decode()
        assert f"albireo:event/{EVENT}/v2" in page and 'type="application/ld+json"' in page
    finally:
        srv.shutdown()
        th.join(timeout=10)
        store.close()
        index.close()
