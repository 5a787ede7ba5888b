"""Reconstruction scans on the production stack: tasks and results on the real Kafka, scans in Cassandra.

The acceptance test of issue 14, the same as the embedded one (``tests/web/test_scans_web.py``,
both from ``tests/scans_harness.py``): a scan through the REST API with ``albireo scan-server`` and
two ``albireo scan-worker`` processes in one consumer group; once both hold task partitions and
contribute, one is SIGKILLed; its uncommitted tasks are redelivered to the survivor after the
session timeout and the scan finishes; skyreader reads the result; the best pixel is the true
direction's (or a neighbour) and the 90 % area within 5 % of the analytic cap.
"""

from __future__ import annotations

import uuid

import pytest

from broker.ops import services
from tests.integration.test_run_workers import _wait_for_members
from tests.scans_harness import check_scan, run_scan_killing_a_worker, scan_env

pytestmark = [pytest.mark.integration]


def test_a_scan_on_kafka_and_cassandra_survives_a_killed_worker(tmp_path):
    services.up(["kafka", "cassandra"])
    boot = services.endpoints()["kafka"]
    tag = uuid.uuid4().hex[:8]
    keyspace = f"scans_{tag}"
    env = scan_env(tmp_path, ALBIREO_SCANS__QUEUE="kafka", ALBIREO_KAFKA__BOOTSTRAP_SERVERS=boot,
                   ALBIREO_SCANS__TOPIC_PREFIX=f"scans-{tag}.", ALBIREO_SCANS__PARTITIONS="4",
                   ALBIREO_SCANS__GROUP_ID=f"scan-workers-{tag}", ALBIREO_SCANS__SERVER_GROUP_ID=f"scan-server-{tag}",
                   ALBIREO_STORE__BACKEND="cassandra", ALBIREO_STORE__KEYSPACE=keyspace)
    try:
        out = run_scan_killing_a_worker(
            tmp_path, env, work_ms=4.0, timeout_s=420,
            before_post=lambda: _wait_for_members(boot, f"scan-workers-{tag}.realtime", 2, timeout_s=150))
        check_scan(out)
        assert out["record"]["workers"] == out["manifest"]["workers"]
    finally:
        from broker.adapters.storage.cassandra import CassandraStore

        store = CassandraStore(keyspace=keyspace)
        store.drop_keyspace()
        store.close()
