"""Fault tests on the real servers: workers killed at random, Kafka restarted, Elasticsearch stopped.

Each test ends by counting, not by trusting the worker's summary:

- every decodable input packet's trigger is in the store, and no alert row is there twice;
- a ``read_committed`` consumer of the output topics sees every output the pipeline recorded as the
  outputs of its input positions (``Store.record_outputs``: what it decided to publish), each
  exactly once, and nothing else;
- for the Elasticsearch outage, the index holds every stored locus with its stored alert count.

`make test` runs bounded versions (a few thousand alerts, short outages); `make chaos`
(``ALBIREO_CHAOS=1``) runs the full ones: 50,000 alerts under three workers killed every few seconds,
and Elasticsearch stopped for a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from broker.adapters.streams.files import StreamFileSink, iter_stream_file
from broker.adapters.streams.kafka import ensure_topics
from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError
from broker.ops import services
from broker.ops.loadgen import replay
from tests.integration.test_pipeline_kafka import _consume_all

CHAOS = bool(os.environ.get("ALBIREO_CHAOS"))
#: what each test here may take (pytest-timeout); `_finish` gives up early enough to report why.
TEST_BUDGET_S = 3600 if CHAOS else 600

pytestmark = [pytest.mark.integration, pytest.mark.shared_data, pytest.mark.timeout(TEST_BUDGET_S)]


def _make_stream(path: Path, shared_data: Path, n: int, seed: int) -> tuple[Path, set[str], int]:
    """Write ``n`` jittered real ZTF packets to a stream file; return it with the triggers it holds."""
    sink = StreamFileSink(path)
    replay([shared_data / "ztf"], topic="x", sink=sink, count=n, jitter=True, seed=seed, progress=False)
    sink.close()
    triggers: set[str] = set()
    undecodable = 0
    for raw in iter_stream_file(path):
        try:
            triggers.update(p.trigger.alert_id for p in decode_message(raw))
        except DecodeError:
            undecodable += 1
    return path, triggers, undecodable


def _env(topic: str, group: str, work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_KAFKA__BOOTSTRAP_SERVERS=services.endpoints()["kafka"], ALBIREO_KAFKA__INPUT_TOPICS=topic,
               ALBIREO_KAFKA__GROUP_ID=group, ALBIREO_KAFKA__OUTPUT_PREFIX=f"{group}.loci.",
               ALBIREO_KAFKA__DEAD_LETTER_TOPIC=f"{group}.dlq", ALBIREO_KAFKA__TRANSACTIONAL="true",
               ALBIREO_KAFKA__BATCH_SIZE="100", ALBIREO_STORE__PATH=str(work / "store.sqlite"),
               ALBIREO_SEARCH__PATH=str(work / "index.sqlite"), ALBIREO_CATALOGS__ENABLED="false",
               ALBIREO_FILTERS__REGISTRY="false", ALBIREO_HOME=str(work / "home"),
               ALBIREO_SERVICE__METRICS_PORT="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _start(env: dict[str, str], work: Path, workers: int, idle_s: float) -> subprocess.Popen:
    log = open(work / "run.log", "w")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen([sys.executable, "-m", "broker.cli", "run", "--workers", str(workers),
                             "--idle-timeout", str(idle_s)], env=env, cwd=work, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def _stored_alerts(work: Path) -> tuple[int, set[str]]:
    if not (work / "store.sqlite").exists():
        return 0, set()
    db = sqlite3.connect(work / "store.sqlite", timeout=30)
    try:
        rows = db.execute("SELECT alert_id FROM alerts").fetchall()
        return len(rows), {r[0] for r in rows}
    except sqlite3.OperationalError:  # the schema is not there yet: nothing stored so far
        return 0, set()
    finally:
        db.close()


def _progress(work: Path, triggers: set[str]) -> int:
    """How many of the input packets' triggers are stored so far."""
    return len(_stored_alerts(work)[1] & triggers)


def _recorded_outputs(work: Path) -> Counter:
    """What the pipeline decided to publish: the outputs recorded under their input positions."""
    db = sqlite3.connect(work / "store.sqlite", timeout=30)
    try:
        return Counter((topic, hashlib.sha256(value).hexdigest())
                       for topic, value in db.execute("SELECT topic, value FROM outputs"))
    finally:
        db.close()


def _published_outputs(group: str) -> Counter:
    """What a read_committed consumer sees on the output topics."""
    from confluent_kafka.admin import AdminClient

    boot = services.endpoints()["kafka"]
    topics = [t for t in AdminClient({"bootstrap.servers": boot}).list_topics(timeout=10).topics
              if t.startswith(f"{group}.loci.")]
    got: Counter = Counter()
    for t in topics:
        for m in _consume_all(boot, t, idle_s=3.0, timeout_s=300):
            got[(t, hashlib.sha256(m.value()).hexdigest())] += 1
    return got


def _check_counts(work: Path, group: str, triggers: set[str]) -> dict[str, int]:
    n_rows, stored = _stored_alerts(work)
    assert n_rows == len(stored), f"{n_rows - len(stored)} alert rows stored twice"
    missing = triggers - stored
    assert not missing, f"{len(missing)} input alerts never stored, e.g. {sorted(missing)[:3]}"
    want, got = _recorded_outputs(work), _published_outputs(group)
    assert sum(want.values()) > 0, "the input must produce tagged outputs"
    lost, extra = want - got, got - want
    assert not lost and not extra, f"outputs lost {sum(lost.values())}, duplicated or unknown {sum(extra.values())}"
    return {"alerts_stored": n_rows, "outputs": sum(got.values())}


@pytest.fixture
def budget():
    """Seconds left of this test's budget, minus a margin for reporting and the final counts."""
    t0 = time.monotonic()
    return lambda: TEST_BUDGET_S - (time.monotonic() - t0) - 90


def _finish(proc: subprocess.Popen, work: Path, timeout: float) -> str:
    """Wait for ``albireo run`` to end; if it does not, fail with every worker's stacks and the log's tail.

    The workers register ``faulthandler`` on SIGUSR1, so a hang says where it waits instead of
    being killed silently by pytest-timeout. The supervisor and its workers are all killed: an
    orphaned worker would go on consuming next to the next test.
    """
    import psutil

    try:
        proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        for c in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                c.send_signal(signal.SIGUSR1)
        time.sleep(3)
        _kill_tree(proc)
        tail = (work / "run.log").read_text(errors="replace")[-12000:]
        pytest.fail(f"albireo run still running after {timeout:.0f}s; stacks and log tail:\n{tail}")
    return (work / "run.log").read_text(errors="replace")


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    if proc.poll() is not None:
        return
    for c in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            c.kill()
    proc.wait()


def test_workers_killed_at_random_lose_and_duplicate_nothing(tmp_path, shared_data, budget):
    """``kill -9`` a random worker every few seconds while ``run --workers N`` works through a replay."""
    import psutil

    n, workers, kills = (50_000, 3, 12) if CHAOS else (6_000, 2, 3)
    services.up(["kafka"])
    boot = services.endpoints()["kafka"]
    _, triggers, _ = _make_stream(tmp_path / "in.avro-stream", shared_data, n, seed=31)
    topic, group = f"kill-{uuid.uuid4().hex[:8]}", f"kill-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic], partitions=6)
    replay([tmp_path / "in.avro-stream"], topic=topic, bootstrap=boot, progress=False)
    proc = _start(_env(topic, group, tmp_path), tmp_path, workers, idle_s=30)
    rng = random.Random(7)
    killed_at: list[int] = []
    try:
        deadline = time.monotonic() + (1800 if CHAOS else 300)
        while len(killed_at) < kills and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(rng.uniform(1.5, 3.0))
            stored = _progress(tmp_path, triggers)
            if stored >= len(triggers):
                break  # all done: a kill now would test nothing
            children = [c for c in psutil.Process(proc.pid).children() if c.is_running()]
            if stored == 0 or not children:
                continue  # still starting
            rng.choice(children).send_signal(signal.SIGKILL)
            killed_at.append(stored)
        log = _finish(proc, tmp_path, timeout=budget())
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0, log[-4000:]
    assert killed_at, "no worker was killed while work remained"
    assert log.count("restarting in") >= len(killed_at), "the supervisor restarted every killed worker"
    counts = _check_counts(tmp_path, group, triggers)
    print(f"\n{n} packets, {workers} workers, killed {len(killed_at)} times (input alerts stored then: {killed_at}); {counts}")


def test_kafka_restarted_mid_stream_loses_and_duplicates_nothing(tmp_path, shared_data, budget):
    """The broker goes down and comes back while two transactional workers are mid-stream."""
    n = 20_000 if CHAOS else 2_500
    services.up(["kafka"])
    boot = services.endpoints()["kafka"]
    _, triggers, _ = _make_stream(tmp_path / "in.avro-stream", shared_data, n, seed=37)
    topic, group = f"kre-{uuid.uuid4().hex[:8]}", f"kre-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic], partitions=4)
    replay([tmp_path / "in.avro-stream"], topic=topic, bootstrap=boot, progress=False)
    # a worker wedged in librdkafka across the restart is ended by its stall watchdog and restarted
    proc = _start(_env(topic, group, tmp_path, ALBIREO_SERVICE__STALL_TIMEOUT_S="120"), tmp_path,
                  workers=2, idle_s=60)
    try:
        deadline = time.monotonic() + 300
        while _progress(tmp_path, triggers) < len(triggers) // 10 and time.monotonic() < deadline:
            time.sleep(0.5)
        stored_before = _progress(tmp_path, triggers)
        assert 0 < stored_before < len(triggers), "the restart must land mid-stream"
        services.down(["kafka"])
        time.sleep(5)
        services.up(["kafka"])
        log = _finish(proc, tmp_path, timeout=budget())
    finally:
        _kill_tree(proc)
        services.up(["kafka"])
    assert proc.returncode == 0, log[-4000:]
    counts = _check_counts(tmp_path, group, triggers)
    print(f"\nKafka restarted after {stored_before} of {len(triggers)} alerts; {counts}")


def test_elasticsearch_stopped_while_workers_run_index_catches_up(tmp_path, shared_data, budget):
    """Elasticsearch is stopped (a minute under chaos) while a worker indexes: the outbox catches up."""
    from broker.adapters.search.elasticsearch import ElasticsearchIndex
    from broker.assemble import open_store
    from broker.config import load_config

    n, outage_s = (10_000, 60.0) if CHAOS else (1_500, 10.0)
    services.up(["kafka", "elasticsearch"])
    boot = services.endpoints()["kafka"]
    _, triggers, _ = _make_stream(tmp_path / "in.avro-stream", shared_data, n, seed=41)
    topic, group = f"eso-{uuid.uuid4().hex[:8]}", f"eso-{uuid.uuid4().hex[:8]}"
    index_name = f"eso-{uuid.uuid4().hex[:10]}"
    ensure_topics(boot, [topic], partitions=2)
    replay([tmp_path / "in.avro-stream"], topic=topic, bootstrap=boot, progress=False)
    env = _env(topic, group, tmp_path, ALBIREO_SEARCH__BACKEND="elasticsearch",
               ALBIREO_SEARCH__ELASTICSEARCH_URL=services.endpoints()["elasticsearch"],
               ALBIREO_SEARCH__INDEX_NAME=index_name)
    proc = _start(env, tmp_path, workers=1, idle_s=outage_s + 60)
    outage: dict[str, int] = {}

    def stop_es_for_a_while() -> None:
        while _progress(tmp_path, triggers) < 100 and proc.poll() is None:
            time.sleep(0.3)
        outage["stored_at_stop"] = _progress(tmp_path, triggers)
        services.down(["elasticsearch"])
        time.sleep(outage_s)
        outage["stored_at_start"] = _progress(tmp_path, triggers)
        services.up(["elasticsearch"])

    chaos = threading.Thread(target=stop_es_for_a_while)
    try:
        chaos.start()
        log = _finish(proc, tmp_path, timeout=budget())
        chaos.join(timeout=outage_s + 300)
    finally:
        _kill_tree(proc)
        services.up(["elasticsearch"])
    assert proc.returncode == 0, log[-4000:]
    assert outage["stored_at_start"] > outage["stored_at_stop"], "the worker went on storing while ES was down"
    _check_counts(tmp_path, group, triggers)
    cfg = load_config(env={})
    cfg.store.path = str(tmp_path / "store.sqlite")
    store = open_store(cfg, create=False)
    index = ElasticsearchIndex(url=services.endpoints()["elasticsearch"], index_name=index_name)
    try:
        stored = {x.locus_id: x.properties["num_alerts"] for batch in store.iter_loci() for x in batch}
        index.refresh()
        assert index.count() == len(stored), f"index {index.count()} vs store {len(stored)} loci"
        for lid in random.Random(3).sample(sorted(stored), k=min(50, len(stored))):
            doc = index.get(lid)
            assert doc is not None and doc["num_alerts"] == stored[lid], lid
    finally:
        index.drop()
        index.close()
        store.close()
    print(f"\nElasticsearch down {outage_s:.0f}s ({outage}); {len(stored)} loci indexed as stored")
