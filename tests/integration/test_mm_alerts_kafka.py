"""Outgoing alerts on Kafka + Cassandra: the notice consumer group issues them, topics and store hold them.

Loci around an IceCube track are stored in a Cassandra keyspace of this test's own (index: SQLite,
so only the servers under test are involved); the track and its retraction are replayed to a
notice topic of its own; one `kafka_notice_worker` drains them. Revisions 1 (initial, targets =
the tagged loci) and 2 (retraction) must be in Cassandra and on the four alert topics, keyed by
event, with the revision in the headers. The servers are the shared ones: this test never starts them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from broker.config import load_config
from broker.multimessenger.notice import to_mjd
from broker.multimessenger.outgoing.build import NEUTRINO_SCHEMA, OPTICAL_SCHEMA
from broker.multimessenger.parse import parse_notice
from broker.multimessenger.schemas import validate_json

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "notices"
EVENT = "IceCube-137840_57034692"


def _up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cfg(tmp_path):
    if not (_up(9092) and _up(9042)):
        pytest.skip("the shared Kafka (9092) and Cassandra (9042) are not reachable")
    from broker.ops import services

    run = uuid.uuid4().hex[:10]
    c = load_config(env={})
    c.kafka.bootstrap_servers = services.endpoints()["kafka"]
    c.store.backend, c.store.keyspace = "cassandra", f"mma_{run}"
    c.search.backend, c.search.path = "sqlite", str(tmp_path / "index.sqlite")
    c.search.outbox_path = str(tmp_path / "outbox.sqlite")
    c.catalogs.enabled, c.filters.builtin, c.filters.refresh_s = False, [], 0.0
    mm = c.multimessenger
    mm.notice_topics, mm.group_id = [f"mma-notices-{run}"], f"mma-g-{run}"
    mm.dead_letter_topic, mm.alert_topic_prefix = f"mma-{run}.dlq", f"mma-{run}.alerts."
    c.kafka.output_prefix = f"mma-{run}.loci."
    mm.download_skymaps = False
    yield c
    from broker.assemble import open_store

    s = open_store(c)
    s.drop_keyspace()
    s.close()


def test_alerts_issued_by_the_notice_group_on_kafka_and_cassandra(cfg, tmp_path):
    from broker.assemble import kafka_notice_worker, open_index, open_index_writer, open_store
    from broker.ops.loadgen import replay
    from tests.contract.conftest import make_locus
    from tests.integration.test_pipeline_kafka import _consume_all

    t0 = to_mjd(parse_notice((DATA / "icecube_gold_track.xml").read_bytes()).created_dt)
    rng = np.random.default_rng(11)
    loci = [make_locus(345.82 + float(dx), 9.01 + float(dy), n=2, mjd0=t0 - 0.5, seed=i)
            for i, (dx, dy) in enumerate(rng.uniform(-0.6, 0.6, (30, 2)))]
    store, index = open_store(cfg), open_index(cfg)
    store.save_batch(loci, [a for x in loci for a in x.alerts])
    writer = open_index_writer(cfg, index)
    writer.write(loci)
    assert writer.close()
    store.close()
    index.close()
    files = [DATA / "icecube_gold_track.xml", DATA / "icecube_gold_track_retraction.xml"]
    for f in files:  # one at a time: the retraction must come in a later batch than the track
        stats = replay([f], topic=cfg.multimessenger.notice_topics[0], bootstrap=cfg.kafka.bootstrap_servers,
                       progress=False, notices=True)
        assert stats.messages == 1
        with kafka_notice_worker(cfg) as a:
            read, deadline = 0, time.monotonic() + 120
            while read < 1 and time.monotonic() < deadline:
                read += a.worker.run(max_messages=1, idle_timeout_s=8).result.messages
            assert read == 1
    store = open_store(cfg)
    try:
        revs = store.outgoing(EVENT)
    finally:
        store.close()
    # expected independently: loci with a detection within the track's 0.5° (90 %) circle, in the window
    from astropy.coordinates import SkyCoord

    c0 = SkyCoord(345.82, 9.01, unit="deg")
    tagged = {x.locus_id for x in loci if any(
        np.isfinite(a.ra) and t0 - 1 <= a.mjd <= t0 + 14 and c0.separation(SkyCoord(a.ra, a.dec, unit="deg")).deg <= 0.5
        for a in x.alerts)}
    assert {t["event_name"] for t in revs[0]["optical"]["data"]["targets"]} == tagged
    assert [(r["record_number"], r["alert_type"]) for r in revs] == [(1, "initial"), (2, "retraction")]
    assert 0 < len(tagged) < len(loci)
    prefix = cfg.multimessenger.alert_topic_prefix
    nu = _consume_all(cfg.kafka.bootstrap_servers, prefix + "neutrino", idle_s=3.0)
    bodies = [json.loads(m.value()) for m in nu]
    for b in bodies:
        validate_json(b, NEUTRINO_SCHEMA)
    assert [(b["record_number"], b["alert_type"]) for b in bodies] == [(1, "initial"), (2, "retraction")]
    assert all(m.key() == EVENT.encode() for m in nu)
    assert [dict(m.headers())["albireo.record_number"] for m in nu] == [b"1", b"2"]
    optical = [json.loads(m.value()) for m in _consume_all(cfg.kafka.bootstrap_servers, prefix + "optical", idle_s=3.0)]
    for b in optical:
        validate_json(b, OPTICAL_SCHEMA)
    assert {t["event_name"] for t in optical[0]["data"]["targets"]} == tagged and optical[1]["data"]["targets"] == []
    import voeventparse as vp

    vo = _consume_all(cfg.kafka.bootstrap_servers, prefix + "voevent", idle_s=3.0)
    assert len(vo) == 2 and all(vp.valid_as_v2_0(vp.loads(m.value())) for m in vo)
    circ = _consume_all(cfg.kafka.bootstrap_servers, prefix + "circular", idle_s=3.0)
    assert [m.value().decode().splitlines()[0] for m in circ] == [
        "TITLE:   GCN CIRCULAR (Albireo alert broker, revision 1)", "TITLE:   GCN CIRCULAR (Albireo alert broker, revision 2)"]
