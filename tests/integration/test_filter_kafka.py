"""User filters on the real Kafka pipeline: registered revisions run sandboxed, hostile ones are contained.

Real ZTF packets are replayed to a topic; a worker of the consumer group runs the
built-ins plus registry filters (one good, two hostile); every message is processed,
the good filter's stream arrives on Kafka with its revision as provenance, and the
hostile filters end disabled in the registry.
"""

from __future__ import annotations

import uuid

import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.kafka import KafkaSink, KafkaSource
from broker.assemble import build_filters, build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.emit import decode_locus_message
from broker.filtering import registry as reg
from broker.ops import services
from broker.ops.loadgen import replay
from broker.worker import Worker
from tests.integration.test_pipeline_kafka import _consume_all
from tests.unit.test_filter_sandbox import GOOD, HOSTILE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka() -> str:
    services.up(["kafka"])
    return services.endpoints()["kafka"]


def test_registered_filters_on_kafka_with_hostile_neighbours(kafka, tmp_path, shared_data):
    topic = f"filters-{uuid.uuid4().hex[:8]}"
    stats = replay([shared_data / "ztf"], topic=topic, bootstrap=kafka, progress=False)
    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = kafka
    cfg.kafka.input_topics = [topic]
    cfg.kafka.group_id = f"g-{topic}"
    cfg.kafka.output_prefix = f"{topic}.loci."
    cfg.kafka.dead_letter_topic = f"{topic}.dlq"
    cfg.store.path = str(tmp_path / "store.sqlite")
    cfg.catalogs.enabled = False
    cfg.filters.timeout_s = 1.0
    cfg.filters.min_runs = 2  # judge the error rate after two runs
    cfg.filters.max_mean_s = 0.0
    assoc = Associator(cfg.association.radius_arcsec)
    store = SQLiteStore(cfg.store.path, assoc.order)
    good = reg.add_revision(store, GOOD, "alice", approved_by="operator", enable=True)
    for name in ("Segv", "Looper"):
        reg.add_revision(store, HOSTILE[name][0], "mallory", approved_by="operator", enable=True)
    runner = build_filters(cfg, store=store)
    source = KafkaSource(kafka, cfg.kafka.group_id, [topic])
    sink = KafkaSink(kafka)
    worker = Worker(build_pipeline(cfg, store, sink, filters=runner, associator=assoc), source, batch_size=20)
    try:
        summary = worker.run(idle_timeout_s=8)
    finally:
        source.close()
        runner.close()
    r = summary.result
    assert r.messages == stats.messages
    assert r.packets + r.rejected_total == r.messages
    assert r.filter_errors >= 4 and r.tags["good"] > 0
    msgs = _consume_all(kafka, cfg.kafka.output_prefix + "good")
    assert len(msgs) == r.tags["good"]
    for m in msgs:
        rec = decode_locus_message(m.value())
        assert rec["provenance"]["good"]["filter"] == "Good"
        assert rec["provenance"]["good"]["revision"] == good["revision"]
    for name in ("Segv", "Looper"):
        assert reg.get_filter(store, name)["revisions"][-1]["status"] == "disabled"
    store.close()
