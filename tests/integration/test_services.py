"""The three real servers started by broker.ops.services answer real client requests.

Each test does one round trip that only a working server can satisfy: Kafka stores and returns a
message, Cassandra stores and returns a row, Elasticsearch indexes and finds a document. The
module fixture starts whatever is not already healthy and leaves the servers running, because
other integration modules reuse them.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from broker.ops import services

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def running_services() -> dict[str, str]:
    """Start (or reuse) all three servers; a failure here shows the failing server's log tail."""
    services.up(services.NAMES)
    return services.endpoints()


def test_status_reports_every_server_healthy() -> None:
    state = services.status()
    for name in services.NAMES:
        assert state[name]["installed"], name
        assert state[name]["alive"], f"{name}: pid {state[name]['pid']} not alive"
        assert state[name]["port_open"], name
        assert state[name]["healthy"], name
        assert state[name]["rss_mb"] and state[name]["rss_mb"] > 50, name


def test_up_is_idempotent_when_healthy() -> None:
    report = services.up(services.NAMES)
    assert {r["action"] for r in report.values()} == {"already healthy"}


def test_kafka_topic_produce_consume(running_services: dict[str, str]) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = running_services["kafka"]
    topic = f"albireo-test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    try:
        payload = f"alert-{uuid.uuid4().hex}".encode()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        delivered: list[str | None] = []
        producer.produce(topic, key=b"k1", value=payload,
                         on_delivery=lambda err, msg: delivered.append(None if err is None else str(err)))
        assert producer.flush(30) == 0
        assert delivered == [None]

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        try:
            got = None
            deadline = time.monotonic() + 60
            while got is None and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                got = msg
        finally:
            consumer.close()
        assert got is not None, "no message consumed within 60 s"
        assert got.value() == payload
        assert got.key() == b"k1"
        assert got.topic() == topic
        assert topic in admin.list_topics(timeout=10).topics
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_cassandra_keyspace_table_insert_select(running_services: dict[str, str]) -> None:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    host, port = running_services["cassandra"].rsplit(":", 1)
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=30)
    cluster = Cluster([host], port=int(port), execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    keyspace = f"albireo_test_{uuid.uuid4().hex[:10]}"
    session = cluster.connect()
    try:
        release = session.execute("SELECT release_version FROM system.local").one().release_version
        assert release.startswith("5.0."), release
        session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        session.execute(f"CREATE TABLE {keyspace}.loci (locus_id text PRIMARY KEY, ra double, dec double)")
        session.execute(f"INSERT INTO {keyspace}.loci (locus_id, ra, dec) VALUES (%s, %s, %s)",
                        ("ANT2020abc", 150.25, -2.5))
        rows = list(session.execute(f"SELECT locus_id, ra, dec FROM {keyspace}.loci WHERE locus_id = %s",
                                    ("ANT2020abc",)))
        assert [(r.locus_id, r.ra, r.dec) for r in rows] == [("ANT2020abc", 150.25, -2.5)]
        assert list(session.execute(f"SELECT * FROM {keyspace}.loci WHERE locus_id = 'missing'")) == []
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


def _es(method: str, url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def test_elasticsearch_index_and_search(running_services: dict[str, str]) -> None:
    base = running_services["elasticsearch"]
    index = f"albireo-test-{uuid.uuid4().hex[:12]}"
    _es("PUT", f"{base}/{index}", {"settings": {"number_of_shards": 1, "number_of_replicas": 0}})
    try:
        _es("PUT", f"{base}/{index}/_doc/ANT2020abc?refresh=true",
            {"locus_id": "ANT2020abc", "tags": ["nuclear_transient"], "ra": 150.25})
        _es("PUT", f"{base}/{index}/_doc/ANT2020xyz?refresh=true",
            {"locus_id": "ANT2020xyz", "tags": ["high_amplitude"], "ra": 10.0})
        hits = _es("POST", f"{base}/{index}/_search",
                   {"query": {"term": {"tags.keyword": "nuclear_transient"}}})["hits"]
        assert hits["total"]["value"] == 1
        assert hits["hits"][0]["_id"] == "ANT2020abc"
        assert hits["hits"][0]["_source"]["ra"] == 150.25
    finally:
        _es("DELETE", f"{base}/{index}")


def test_elasticsearch_python_client_matches_server(running_services: dict[str, str]) -> None:
    """The pinned elasticsearch client major must match the server's (8.x), or requests are refused."""
    from elasticsearch import Elasticsearch

    es = Elasticsearch(running_services["elasticsearch"], request_timeout=30)
    index = f"albireo-client-{uuid.uuid4().hex[:12]}"
    try:
        es.index(index=index, id="1", document={"name": "ZTF21aaaaaaa"}, refresh=True)
        result = es.search(index=index, query={"match": {"name": "ZTF21aaaaaaa"}})
        assert [h["_id"] for h in result["hits"]["hits"]] == ["1"]
    finally:
        es.options(ignore_status=404).indices.delete(index=index)
        es.close()
