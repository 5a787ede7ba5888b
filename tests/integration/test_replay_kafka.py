"""broker.replay against the real local Kafka: every produced message comes back, keyed and decodable."""

from __future__ import annotations

import uuid

import pytest

from broker.adapters.streams.files import write_stream_file
from broker.ingest.decode import decode_message
from broker.ops import services
from broker.ops.devkit_ztf import devkit_ztf_packets
from broker.ops.loadgen import replay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka() -> str:
    services.up(["kafka"])
    return services.endpoints()["kafka"]


def _consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    import time

    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=1.0):
                assert m.error() is None, m.error()
                got.append(m)
        # nothing beyond what was produced
        got.extend(m for m in consumer.consume(num_messages=10, timeout=2.0) if m.error() is None)
    finally:
        consumer.close()
    return got


def test_replay_devkit_stream_to_kafka(kafka, tmp_path):
    path = tmp_path / "devkit.avro-stream"
    write_stream_file(devkit_ztf_packets(limit=300), path)
    topic = f"replay-test-{uuid.uuid4().hex[:8]}"
    stats = replay([path], topic=topic, bootstrap=kafka, count=700, jitter=True, seed=1, progress=False)
    assert stats.messages == 700 and stats.jittered == 700 and stats.bytes > 0
    msgs = _consume(kafka, topic, 700)
    assert len(msgs) == 700
    ids = set()
    for m in msgs:
        (pkt,) = decode_message(m.value())
        assert m.key() == pkt.trigger.object_id.encode()
        ids.add(pkt.trigger.alert_id)
    assert len(ids) == 700


def test_replay_real_packets_unchanged_with_rate(kafka, tmp_path):
    path = tmp_path / "few.avro-stream"
    packets = list(devkit_ztf_packets(limit=50))
    write_stream_file(packets, path)
    topic = f"replay-test-{uuid.uuid4().hex[:8]}"
    stats = replay([path], topic=topic, bootstrap=kafka, rate=500.0, progress=False)
    assert stats.messages == 50
    msgs = _consume(kafka, topic, 50)
    assert [m.value() for m in msgs] == packets
