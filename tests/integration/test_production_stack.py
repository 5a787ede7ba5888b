"""The same replayed stream through Kafka → Cassandra + Elasticsearch and through the embedded stack.

Mid-stream, Cassandra and then Elasticsearch are stopped and restarted (the real servers): the
worker backs off, the outbox holds the index documents, and at the end both stacks hold the same
loci, alerts, tags, catalog matches and search results.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from broker.adapters.outbox import OutboxIndexWriter
from broker.adapters.search.elasticsearch import ElasticsearchIndex
from broker.adapters.search.sqlite import SQLiteIndex
from broker.adapters.storage.cassandra import CassandraStore
from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.adapters.streams.kafka import KafkaSink, KafkaSource
from broker.assemble import build_pipeline, open_catalogs
from broker.association import Associator
from broker.config import load_config
from broker.ops import services
from broker.ops.loadgen import replay
from broker.ports import LocusQuery
from broker.worker import Worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    services.up(["kafka", "cassandra", "elasticsearch"])
    return services.endpoints()


@pytest.fixture(scope="module")
def stream(tmp_path_factory, shared_data, lsst_samples) -> Path:
    path = tmp_path_factory.mktemp("stream") / "alerts.avro-stream"
    sink = StreamFileSink(path)
    replay([shared_data / "ztf", *lsst_samples.values()], topic="x", sink=sink, count=360, jitter=True,
           seed=11, max_shift_deg=0.02, progress=False)
    sink.close()
    return path


def _cfg(tmp: Path):
    cfg = load_config(env={})
    cfg.catalogs.root = str(tmp / "catalogs")
    cfg.kafka.batch_size = 30
    return cfg


def _state(store, index) -> dict:
    loci = {}
    for batch in store.iter_loci():
        for x in batch:
            loci[x.locus_id] = {
                "alerts": sorted(a.alert_id for a in x.alerts),
                "tags": sorted(x.tags),
                "catalogs": sorted(x.catalog_objects),
                "num_alerts": x.properties["num_alerts"],
                "newest": x.properties["newest_alert_id"],
            }
    index.refresh()
    searches = {}
    rng = np.random.default_rng(0)
    ids = sorted(loci)
    for lid in rng.choice(ids, size=min(8, len(ids)), replace=False):
        doc = index.get(lid)
        assert doc is not None, lid
        res = index.search(LocusQuery(cone=(doc["ra"], doc["dec"], 0.05), limit=500))
        searches[f"cone:{lid}"] = sorted(h["locus_id"] for h in res.hits)
    for tag in sorted({t for v in loci.values() for t in v["tags"]}):
        res = index.search(LocusQuery(tags=[tag], limit=1000))
        searches[f"tag:{tag}"] = sorted(h["locus_id"] for h in res.hits)
    return {"loci": loci, "searches": searches, "index_count": index.count(), "tag_counts": index.tag_counts()}


def _restart_when(store_counts, names, after_batches, summary_box, log):
    """Stop and start the named servers once the worker has done ``after_batches`` batches."""
    while summary_box.get("batches", 0) < after_batches and not summary_box.get("done"):
        time.sleep(0.2)
    for name in names:
        log.append((name, "down", summary_box.get("batches", 0)))
        services.down([name])
        time.sleep(3)
        services.up([name])
        log.append((name, "up", summary_box.get("batches", 0)))


def test_production_stack_equals_embedded_across_server_restarts(stack, stream, tmp_path):
    n = sum(1 for _ in iter_stream_file(stream))
    assert n == 360

    # Embedded reference.
    cfg = _cfg(tmp_path)
    assoc = Associator(cfg.association.radius_arcsec)
    ref_store = SQLiteStore(tmp_path / "ref.sqlite", assoc.order)
    ref_writer = OutboxIndexWriter(SQLiteIndex(tmp_path / "ref-index.sqlite"), tmp_path / "ref-outbox.sqlite")
    cats = open_catalogs(cfg)
    ref = Worker(build_pipeline(cfg, ref_store, StreamFileSink(tmp_path / "ref-out"), index_writer=ref_writer,
                                catalogs=cats, associator=assoc), FileSource([stream]), batch_size=30).run()
    ref_writer.close()
    assert ref.result.tags, "nothing was tagged: the comparison would be weak"

    # Production: Kafka in and out, Cassandra store, Elasticsearch index behind the outbox.
    topic = f"prod-{uuid.uuid4().hex[:8]}"
    replay([stream], topic=topic, bootstrap=stack["kafka"], progress=False)
    keyspace = f"it_{uuid.uuid4().hex[:10]}"
    store = CassandraStore(keyspace=keyspace, association_order=assoc.order, outage_timeout_s=300)
    es = ElasticsearchIndex(stack["elasticsearch"], index_name=f"it-{uuid.uuid4().hex[:10]}")
    writer = OutboxIndexWriter(es, tmp_path / "outbox.sqlite")
    source = KafkaSource(stack["kafka"], f"g-{topic}", [topic])
    sink = KafkaSink(stack["kafka"])
    cfg.kafka.output_prefix = f"{topic}.loci."
    cfg.kafka.dead_letter_topic = f"{topic}.dlq"
    pipeline = build_pipeline(cfg, store, sink, index_writer=writer, catalogs=cats, associator=assoc)
    worker = Worker(pipeline, source, batch_size=30, poll_timeout_s=1.0)

    box: dict = {}
    restarts: list = []
    original = worker._process_with_retry

    def counting(batch, summary, max_backoff_s, *rest):
        res = original(batch, summary, max_backoff_s, *rest)
        box["batches"] = box.get("batches", 0) + 1
        return res

    worker._process_with_retry = counting
    t = threading.Thread(target=_restart_when, args=(None, ["cassandra", "elasticsearch"], 2, box, restarts))
    t.start()
    try:
        prod = worker.run(idle_timeout_s=30)
    finally:
        box["done"] = True
        t.join(timeout=300)
        source.close()
    assert [r[:2] for r in restarts] == [("cassandra", "down"), ("cassandra", "up"),
                                         ("elasticsearch", "down"), ("elasticsearch", "up")]
    total_batches = box["batches"]
    assert all(2 <= r[2] < total_batches for r in restarts if r[1] == "down"), (restarts, total_batches)
    assert writer.close(timeout=180), "the outbox did not drain after Elasticsearch came back"

    r, e = prod.result, ref.result
    assert (r.messages, r.packets, r.rejected_total) == (e.messages, e.packets, e.rejected_total)
    assert r.tags == e.tags
    got = _state(store, es)
    want = _state(ref_store, SQLiteIndex(tmp_path / "ref-index.sqlite"))
    assert got["loci"] == want["loci"]
    assert got["searches"] == want["searches"]
    assert got["index_count"] == want["index_count"] == len(want["loci"])
    assert got["tag_counts"] == want["tag_counts"]
    assert store.counts()["alerts"] == ref_store.counts()["alerts"]
    store.drop_keyspace()
    store.close()
    es.drop()
