"""Writing backfills on the real Cassandra store, publishing to the real Kafka: interrupted, resumed, once each.

Real ZTF packets from ../shared/data are ingested into a fresh keyspace; a registered revision is
then backfilled with --write --publish semantics, interrupted by a KeyboardInterrupt injected
between publishing and writing a batch, and resumed from its checkpoint in Cassandra. The store
then holds exactly the tags and properties the revision gives (computed from each locus's alert
count), with the run's provenance, and the Kafka stream holds each tagged locus exactly once.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from broker.adapters.streams.files import FileSource, StreamFileSink
from broker.assemble import build_pipeline, open_stream_sink, stream_router
from broker.association import Associator
from broker.config import Config
from broker.emit import decode_locus_message
from broker.filtering import registry as reg
from broker.filtering.sandbox import SandboxLimits
from broker.ops import services
from broker.worker import Worker
from tests.integration.test_pipeline_kafka import _consume_all
from tests.unit.test_filter_backfill import REV_A, REV_B

pytestmark = pytest.mark.integration
LIMITS = SandboxLimits(timeout_s=30)


@pytest.fixture(scope="module")
def kafka() -> str:
    services.up(["kafka"])
    return services.endpoints()["kafka"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, shared_data):
    from broker.adapters.storage.cassandra import CassandraStore

    services.up(["cassandra"])
    cfg = Config()
    cfg.catalogs.enabled = False
    cfg.filters.registry = False
    assoc = Associator(cfg.association.radius_arcsec)
    store = CassandraStore(keyspace=f"bf_{uuid.uuid4().hex[:10]}", association_order=assoc.order)
    tmp = tmp_path_factory.mktemp("bf-cassandra")
    worker = Worker(build_pipeline(cfg, store, StreamFileSink(tmp / "streams"), associator=assoc),
                    FileSource([shared_data / "ztf"]), batch_size=50)
    worker.run(max_messages=120)
    reg.add_revision(store, REV_A, "alice", limits=LIMITS)
    reg.add_revision(store, REV_B, "alice", limits=LIMITS)
    yield cfg, store
    store.drop_keyspace()
    store.close()


def test_compare_on_cassandra(ingested):
    cfg, store = ingested
    a, b = (r["revision"] for r in store.list_filter_revisions("BfCount"))
    n = {x.locus_id: len(x.alerts) for batch in store.iter_loci() for x in batch}
    assert store.locus_ids() == sorted(n) and len(n) > 20
    rep = reg.compare_revisions(store, "BfCount", a, b, limits=LIMITS)
    assert rep["totals"]["tags_lost"] == {"bf_multi": sum(v == 13 for v in n.values())}
    assert rep["totals"]["tags_gained"] == {"bf_big": sum(v > 25 for v in n.values())}
    assert rep["totals"]["properties_changed"]["bf_n"] == sum(v > 20 for v in n.values())


def test_interrupted_backfill_resumes_from_its_cassandra_checkpoint_publishing_once(ingested, kafka):
    cfg, store = ingested
    a, _ = (r["revision"] for r in store.list_filter_revisions("BfCount"))
    cfg.kafka.bootstrap_servers = kafka
    cfg.kafka.output_prefix = f"bf-{uuid.uuid4().hex[:8]}.loci."
    n = {x.locus_id: len(x.alerts) for batch in store.iter_loci() for x in batch}
    multi = {lid for lid, v in n.items() if v > 12}

    def interrupt(point: str, batch: int) -> None:
        if (point, batch) == ("after_publish", 1):
            raise KeyboardInterrupt

    sink = open_stream_sink(cfg)
    try:
        with pytest.raises(KeyboardInterrupt):
            reg.run_backfill(store, "BfCount", a, limits=LIMITS, sink=sink, router=stream_router(cfg),
                             batch_size=8, hook=interrupt)
        (run,) = store.list_backfill_runs("BfCount")
        assert run["status"] == "interrupted" and run["position"] == 8
        done = reg.run_backfill(store, "BfCount", limits=LIMITS, sink=sink, router=stream_router(cfg),
                                resume=run["run_id"], batch_size=8)
    finally:
        sink.close()
    assert done["status"] == "done" and store.get_backfill_run(run["run_id"])["position"] == len(n)
    assert done["totals"]["tags_written"] == {"bf_multi": len(multi)}
    assert done["totals"]["published"] == len(multi)
    for batch in store.iter_loci():
        for x in batch:
            assert ("bf_multi" in x.user_tags) == (x.locus_id in multi)
            assert x.user_properties["bf_n"] == n[x.locus_id]
            assert x.provenance["property:bf_n"].backfill_run == run["run_id"]
    msgs = _consume_all(kafka, cfg.kafka.output_prefix + "bf_multi")
    ids = Counter(decode_locus_message(m.value())["locus_id"] for m in msgs)
    assert set(ids) == multi and max(ids.values()) == 1  # every tagged locus once, none twice
    assert all(dict(m.headers() or [])["albireo.backfill"] == run["run_id"].encode() for m in msgs)
