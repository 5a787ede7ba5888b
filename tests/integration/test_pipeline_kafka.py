"""The streaming core on the real local Kafka.

replay real packets → worker (consumer group) → tagged topics + dead-letter topic, then a
worker killed with SIGKILL mid-stream and restarted: nothing lost, nothing twice in the store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from broker.adapters.storage.sqlite import SQLiteStore
from broker.adapters.streams.files import FileSource, StreamFileSink, iter_stream_file
from broker.adapters.streams.kafka import KafkaSink, KafkaSource
from broker.assemble import build_pipeline
from broker.association import Associator
from broker.config import load_config
from broker.emit import decode_locus_message
from broker.ingest.decode import decode_message
from broker.ops import services
from broker.ops.loadgen import replay
from broker.worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka() -> str:
    services.up(["kafka"])
    return services.endpoints()["kafka"]


def _consume_all(bootstrap: str, topic: str, idle_s: float = 4.0, timeout_s: float = 60.0) -> list:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    c.subscribe([topic])
    out, last, start = [], time.monotonic(), time.monotonic()
    try:
        while time.monotonic() - last < idle_s and time.monotonic() - start < timeout_s:
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error() is None:
                    out.append(m)
                    last = time.monotonic()
    finally:
        c.close()
    return out


def _committed(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        c.close()


def _end_offset(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


def _config(tmp_path: Path, bootstrap: str, topic: str, group: str):
    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = bootstrap
    cfg.kafka.input_topics = [topic]
    cfg.kafka.group_id = group
    cfg.kafka.output_prefix = f"{topic}.loci."
    cfg.kafka.dead_letter_topic = f"{topic}.dlq"
    cfg.kafka.batch_size = 50
    cfg.store.path = str(tmp_path / "store.sqlite")
    cfg.catalogs.root = str(tmp_path / "catalogs")
    cfg.catalogs.enabled = False
    return cfg


def test_replay_worker_tagged_topics_and_dead_letters(kafka, tmp_path, shared_data, lsst_samples):
    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    inputs = [shared_data / "ztf", *lsst_samples.values()]
    stats = replay(inputs, topic=topic, bootstrap=kafka, progress=False)
    assert stats.messages >= 60

    cfg = _config(tmp_path, kafka, topic, f"g-{topic}")
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(cfg.store.path, assoc.order)
    sink = KafkaSink(kafka)
    source = KafkaSource(kafka, cfg.kafka.group_id, [topic])
    worker = Worker(build_pipeline(cfg, store, sink, associator=assoc), source, batch_size=50, poll_timeout_s=1.0)
    summary = worker.run(idle_timeout_s=8)
    source.close()
    r = summary.result
    assert r.messages == stats.messages
    assert r.packets + r.empty + r.rejected_total == r.messages  # every message accounted for
    # the unreadable ZTF packet, and the ten Rubin samples whose times are seconds where MJD belongs
    assert r.rejected == {"bad_magic": 1, "implausible_time": 10}
    assert r.dead_letters_new == 11 == store.counts()["dead_letters"]

    # The dead-letter topic holds each rejected message's original bytes, with the reason.
    bad = (shared_data / "ztf" / "ztf-avro-alert" / "87704463155002.avro").read_bytes()
    dlq = _consume_all(kafka, cfg.kafka.dead_letter_topic)
    assert len(dlq) == 11
    (letter,) = [m for m in dlq if dict(m.headers())["albireo.reason"] == b"bad_magic"]
    assert letter.value() == bad
    headers = dict(letter.headers())
    assert headers["albireo.origin"].startswith(topic.encode())
    assert {dict(m.headers())["albireo.reason"] for m in dlq} == {b"bad_magic", b"implausible_time"}

    # Every tag the filters set arrived on its stream, keyed by locus id, decodable with our schema.
    assert r.tags, "the built-in filters tagged nothing on real ZTF data"
    for tag, n in r.tags.items():
        msgs = _consume_all(kafka, cfg.kafka.output_prefix + tag)
        assert len(msgs) == n
        for m in msgs:
            rec = decode_locus_message(m.value())
            assert rec["stream"] == tag and tag in rec["tags"]
            assert m.key() == rec["locus_id"].encode()
            stored = store.load_loci([rec["locus_id"]])[rec["locus_id"]]
            assert tag in stored.tags
            # where the locus stood when the tag was set; it follows its later alerts a little since
            assert abs(rec["dec"] - stored.dec) * 3600 < 1.0 and tag in stored.tags
            assert rec["alert"]["alert_id"] in {a.alert_id for a in stored.alerts}
            assert rec["provenance"][tag]["filter"] in cfg.filters.builtin
    store.close()


def _embedded_reference(stream: Path, tmp_path: Path) -> dict[str, set[str]]:
    """Locus id → alert ids, from the embedded pipeline over the same messages."""
    cfg = load_config(env={})
    cfg.catalogs.enabled = False
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(tmp_path / "ref.sqlite", assoc.order)
    Worker(build_pipeline(cfg, store, StreamFileSink(tmp_path / "ref-out"), associator=assoc),
           FileSource([stream]), batch_size=50).run()
    out = _locus_alerts(tmp_path / "ref.sqlite")
    store.close()
    return out


def _locus_alerts(path: Path) -> dict[str, set[str]]:
    db = sqlite3.connect(path)
    out: dict[str, set[str]] = {}
    for lid, aid in db.execute("SELECT locus_id, alert_id FROM alerts"):
        out.setdefault(lid, set()).add(aid)
    db.close()
    return out


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(kafka, tmp_path, shared_data):
    # A larger realistic stream: real ZTF packets, jittered into unique objects.
    stream = tmp_path / "jittered.avro-stream"
    sink = StreamFileSink(stream)
    replay([shared_data / "ztf"], topic="x", sink=sink, count=400, jitter=True, seed=7, progress=False)
    sink.close()
    n_messages = sum(1 for _ in iter_stream_file(stream))
    assert n_messages == 400
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    replay([stream], topic=topic, bootstrap=kafka, progress=False)

    cfg_path = tmp_path / "albireo.toml"
    cfg_path.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka}"
input_topics = ["{topic}"]
group_id = "g-{topic}"
output_prefix = "{topic}.loci."
dead_letter_topic = "{topic}.dlq"
batch_size = 20

[store]
path = "{tmp_path / 'store.sqlite'}"

[search]
path = "{tmp_path / 'index.sqlite'}"

[catalogs]
enabled = false
"""
    )
    cmd = [sys.executable, "-m", "broker.cli", "run", "--config", str(cfg_path), "--idle-timeout", "10"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Kill it hard once it has stored part of the stream.
    deadline = time.monotonic() + 180
    stored = 0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (tmp_path / "store.sqlite").exists():
            try:
                db = sqlite3.connect(tmp_path / "store.sqlite", timeout=5)
                stored = db.execute("SELECT COUNT(DISTINCT locus_id) FROM alerts").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:
                continue
        if stored >= 60:
            break
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert 60 <= stored < 399, f"the kill should land mid-stream (stored loci: {stored})"

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    got = _locus_alerts(tmp_path / "store.sqlite")
    want = _embedded_reference(stream, tmp_path)
    assert sum(len(v) for v in got.values()) == sum(len(v) for v in want.values())
    assert got == want  # same loci (same ids), each with exactly the same alerts

    # The consumer group has committed the end of the topic: a third start reads nothing.
    assert _committed(kafka, f"g-{topic}", topic) == _end_offset(kafka, topic) == 400
    # And no packet's trigger was stored twice (alert ids are the primary key; count rows).
    db = sqlite3.connect(tmp_path / "store.sqlite")
    rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT alert_id) FROM alerts").fetchone()
    db.close()
    assert rows == distinct
    triggers = {decode_message(v)[0].trigger.alert_id for v in iter_stream_file(stream)
                if v[:4] == b"Obj\x01"}
    assert triggers <= {a for s in got.values() for a in s}


def test_transactional_outputs_are_seen_once_despite_a_failed_attempt(kafka, tmp_path, shared_data):
    """A batch fails after its outputs were produced: the transaction aborts and the retry commits.

    read_committed consumers see every output once; the aborted copies are still in the log
    (a read_uncommitted consumer sees them), which proves the abort really happened.
    """
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    replay([shared_data / "ztf"], topic=topic, bootstrap=kafka, progress=False)
    cfg = _config(tmp_path, kafka, topic, f"g-{topic}")
    assoc = Associator.from_config(cfg.association)
    store = SQLiteStore(cfg.store.path, assoc.order)
    failures = {"left": 1}
    original = store.save_batch

    def flaky_save(loci, alerts, cutouts=None):
        if failures["left"] and alerts:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked (injected)")
        return original(loci, alerts, cutouts)

    store.save_batch = flaky_save
    sink = KafkaSink(kafka, transactional_id=f"txn-{topic}")
    source = KafkaSource(kafka, cfg.kafka.group_id, [topic])
    worker = Worker(build_pipeline(cfg, store, sink, associator=assoc), source, batch_size=100,
                    transactional_sink=sink)
    summary = worker.run(idle_timeout_s=8)
    source.close()
    assert failures["left"] == 0 and summary.retries == 1
    tag, n = next(iter(summary.result.tags.most_common()))
    committed = _consume_all(kafka, cfg.kafka.output_prefix + tag)
    assert len(committed) == n  # the retried batch's outputs once, not twice

    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": kafka, "group.id": f"u-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                  "isolation.level": "read_uncommitted"})
    c.subscribe([cfg.kafka.output_prefix + tag])
    raw, start = [], time.monotonic()
    while time.monotonic() - start < 10:
        raw += [m for m in c.consume(500, 0.5) if m.error() is None]
    c.close()
    assert len(raw) > n  # the aborted attempt's copies exist, invisible to read_committed readers

    # Offsets were committed inside the transaction: the group has nothing left to read.
    assert _committed(kafka, cfg.kafka.group_id, topic) == _end_offset(kafka, topic) > 0
    store.close()


def test_a_batch_leaves_when_the_stream_pauses_not_at_the_poll_timeout(kafka) -> None:
    """poll_batch returns the messages there are once the stream pauses (``batch_linger_s``),
    instead of waiting out ``poll_timeout_s`` for a full batch: that wait was in every latency."""
    topic = f"linger-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(kafka)
    for i in range(7):
        sink.publish(topic, None, f"m{i}".encode())
    sink.flush()
    source = KafkaSource(kafka, f"g-{topic}", [topic], batch_linger_s=0.05)
    try:
        got: list = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:  # the first polls wait for the group's assignment
            got = source.poll_batch(500, timeout_s=1.0)
        while len(got) < 7 and time.monotonic() < deadline:
            got += source.poll_batch(500, timeout_s=1.0)
        assert [m.value for m in got] == [f"m{i}".encode() for i in range(7)]
        # a full batch is never waited for: with 7 of 500 messages there, a 120 s timeout is not spent
        start = time.monotonic()
        sink.publish(topic, None, b"late")
        sink.flush()
        (late,) = source.poll_batch(500, timeout_s=120.0)
        assert late.value == b"late" and time.monotonic() - start < 60
    finally:
        source.close()
        sink.close()
