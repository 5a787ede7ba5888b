"""Exactly-once outputs on the real Kafka, with a failure injected at every step of a batch.

For each point of :mod:`broker.faults` (before publish, after publish, after the store write, at
commit, after commit) a transactional worker (`albireo run`, a real subprocess) meets the failure,
either as an error it must retry (``raise``) or as a crash (``crash``, the process dies as under
``kill -9``, and a new worker with the same transactional id takes over). At the end, a
``read_committed`` consumer sees every expected output exactly once, and the store holds every alert
exactly once, as in an uninterrupted run of the same input.

The known defect this guards: a batch stored whose transaction then failed was deduplicated on
retry and its tags were never re-emitted (``at_commit:raise`` lost them).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from broker.adapters.streams.files import StreamFileSink
from broker.adapters.streams.kafka import ensure_topics
from broker.emit import decode_locus_message
from broker.ops import services
from broker.ops.loadgen import replay
from tests.integration.test_pipeline_kafka import _consume_all

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

#: the bounded matrix run by `make test`; `make chaos` runs every point with both actions.
POINTS = ("before_publish", "after_publish", "after_store", "at_commit", "after_commit")
BOUNDED = [(p, "crash") for p in POINTS] + [("at_commit", "raise"), ("after_store", "raise")]
FULL = [(p, a) for p in POINTS for a in ("raise", "crash")]
MATRIX = FULL if os.environ.get("ALBIREO_CHAOS") else BOUNDED


@pytest.fixture(scope="module")
def stream(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("eos") / "in.avro-stream"
    sink = StreamFileSink(path)
    replay([shared_data / "ztf"], topic="x", sink=sink, count=240, jitter=True, seed=23, progress=False)
    sink.close()
    return path


def _run(topic: str, group: str, work: Path, faults: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_KAFKA__BOOTSTRAP_SERVERS=services.endpoints()["kafka"], ALBIREO_KAFKA__INPUT_TOPICS=topic,
               ALBIREO_KAFKA__GROUP_ID=group, ALBIREO_KAFKA__OUTPUT_PREFIX=f"{group}.loci.",
               ALBIREO_KAFKA__DEAD_LETTER_TOPIC=f"{group}.dlq", ALBIREO_KAFKA__TRANSACTIONAL="true",
               ALBIREO_KAFKA__BATCH_SIZE="40", ALBIREO_STORE__PATH=str(work / "store.sqlite"),
               ALBIREO_SEARCH__PATH=str(work / "index.sqlite"), ALBIREO_CATALOGS__ENABLED="false",
               ALBIREO_FILTERS__REGISTRY="false", ALBIREO_HOME=str(work / "home"), ALBIREO_SERVICE__FAULTS=faults)
    return subprocess.run([sys.executable, "-m", "broker.cli", "run", "--idle-timeout", "6"], env=env,
                          capture_output=True, text=True, timeout=300)


def _outputs(group: str) -> Counter:
    boot = services.endpoints()["kafka"]
    got: Counter = Counter()
    from confluent_kafka.admin import AdminClient

    topics = [t for t in AdminClient({"bootstrap.servers": boot}).list_topics(timeout=10).topics
              if t.startswith(f"{group}.loci.") or t == f"{group}.dlq"]
    for t in topics:
        for m in _consume_all(boot, t, idle_s=2.0):
            if t.endswith(".dlq"):
                got[("dlq", m.value()[:32])] += 1
            else:
                rec = decode_locus_message(m.value())
                got[(rec["stream"], rec["locus_id"], rec["alert"]["alert_id"])] += 1
    return got


def _alerts(work: Path) -> tuple[int, set[str]]:
    db = sqlite3.connect(work / "store.sqlite")
    try:
        rows = db.execute("SELECT alert_id FROM alerts").fetchall()
        return len(rows), {r[0] for r in rows}
    finally:
        db.close()


@pytest.fixture(scope="module")
def reference(stream, tmp_path_factory):
    services.up(["kafka"])
    boot = services.endpoints()["kafka"]
    topic = f"eos-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic])
    replay([stream], topic=topic, bootstrap=boot, progress=False)
    work = tmp_path_factory.mktemp("eos-ref")
    group = f"ref-{uuid.uuid4().hex[:8]}"
    proc = _run(topic, group, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = _outputs(group)
    assert sum(n for k, n in outputs.items() if k[0] != "dlq") > 5, "the input must produce tagged outputs"
    return topic, outputs, _alerts(work)


@pytest.mark.parametrize("point,action", MATRIX, ids=[f"{p}-{a}" for p, a in MATRIX])
def test_every_output_once_despite_a_failure(reference, tmp_path, point, action):
    topic, want, (n_ref, ref_alerts) = reference
    group = f"eos-{point}-{action}-{uuid.uuid4().hex[:6]}"
    first = _run(topic, group, tmp_path, faults=f"{point}:batch=3:{action}")
    if action == "crash":
        assert first.returncode == 137, first.stderr[-2000:]  # it really died mid-stream
    log = first.stderr
    if first.returncode != 0:  # crashed (or raised after commit): a new worker with the same id takes over
        again = _run(topic, group, tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        log += again.stderr
    assert f"injected fault: {action} at {point}" in log
    got = _outputs(group)
    missing, extra = want - got, got - want
    assert not missing and not extra, f"missing {sum(missing.values())}, duplicated {sum(extra.values())}"
    n, alerts = _alerts(tmp_path)
    assert n == len(alerts) == n_ref and alerts == ref_alerts
