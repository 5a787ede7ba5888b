"""`albireo run --workers 2` on the real Kafka: one consumer group, both workers busy, every packet once.

Also the operator's view of it: `/metrics` (prometheus-client exposition, consumer lag), `/healthz`,
JSON log lines with context, and `albireo status` listing the group's members and lag.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from broker.adapters.streams.kafka import ensure_topics
from broker.ops import services
from broker.ops.loadgen import replay
from tests.integration.test_faults import _make_stream

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_two_workers_share_the_partitions_and_store_each_packet_once(tmp_path, shared_data):
    services.up(["kafka"])
    boot = services.endpoints()["kafka"]
    topic, group = f"workers-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(boot, [topic], partitions=4)
    n = 600
    stream, triggers, undecodable = _make_stream(tmp_path / "jittered.avro-stream", shared_data, n, seed=5)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBIREO_")}
    env.update(ALBIREO_KAFKA__BOOTSTRAP_SERVERS=boot, ALBIREO_KAFKA__INPUT_TOPICS=topic, ALBIREO_KAFKA__GROUP_ID=group,
               ALBIREO_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq", ALBIREO_KAFKA__OUTPUT_PREFIX=f"{topic}.out.",
               ALBIREO_KAFKA__BATCH_SIZE="50", ALBIREO_STORE__PATH=str(tmp_path / "store.sqlite"),
               ALBIREO_SEARCH__PATH=str(tmp_path / "index.sqlite"), ALBIREO_CATALOGS__ENABLED="false",
               ALBIREO_FILTERS__REGISTRY="false", ALBIREO_SERVICE__METRICS_PORT=str(port),
               ALBIREO_SERVICE__LOG_FORMAT="json", ALBIREO_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "run", "--workers", "2", "--idle-timeout", "45"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the input goes in once both workers hold partitions: otherwise the first to join could read
        # it all before the second arrives (seen on a loaded CI machine), and the test would show nothing
        _wait_for_members(boot, group, 2, timeout_s=150)
        replay([stream], topic=topic, bootstrap=boot, progress=False)  # the same bytes, into Kafka
        health, metrics = {}, {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(metrics) < 2:
            for slot in (0, 1):
                if slot not in metrics:
                    code, body = _get(f"http://127.0.0.1:{port + slot}/metrics") if _listening(port + slot) else (0, "")
                    seen = re.search(r"^albireo_messages_total ([\d.e+]+)", body, re.M) if code == 200 else None
                    if seen and float(seen.group(1)) > 0 and "albireo_consumer_lag{" in body:
                        metrics[slot] = body
                        health[slot] = _get(f"http://127.0.0.1:{port + slot}/healthz")
            time.sleep(0.5)
        status = subprocess.run([sys.executable, "-m", "broker.cli", "status", "--json"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    # both workers processed part of the stream, and the parts add up to the stream, each packet once
    read = [int(m) for m in re.findall(r"messages read\s+(\d+)", out)]
    assert len(read) == 2 and all(r > 0 for r in read) and sum(read) == n, out
    rejected = sum(int(m) for m in re.findall(r"rejected\s+(\d+)", out))
    accepted = sum(int(m) for m in re.findall(r"packets decoded\s+(\d+)", out))
    assert accepted + rejected == n and rejected >= undecodable
    import sqlite3

    db = sqlite3.connect(tmp_path / "store.sqlite")
    # every decodable packet's trigger is in the store, and no alert row twice (across both workers)
    stored = {r[0] for r in db.execute("SELECT alert_id FROM alerts")}
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == len(stored)
    assert triggers <= stored and rejected == undecodable
    # the operator's view while they ran
    assert set(metrics) == {0, 1}
    for slot in (0, 1):
        assert health[slot][0] == 200 and json.loads(health[slot][1])["healthy"] is True
        assert "# TYPE albireo_stage_seconds histogram" in metrics[slot]
    assert any("albireo_consumer_lag{" in m for m in metrics.values())
    assert status.returncode == 0, status.stderr
    group_info = json.loads(status.stdout)["kafka"]
    assert group_info["group"] == group and len(group_info["partitions"]) == 4
    json_lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    rejected_lines = [j for j in json_lines if j.get("reason")]
    assert rejected >= 1 and rejected_lines, "a rejected packet is logged as JSON with its reason"
    assert all("origin" in j and j["origin"].startswith(topic) for j in rejected_lines)


def _wait_for_members(boot: str, group: str, n: int, timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": boot})
    deadline = time.monotonic() + timeout_s
    members: list = []
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
            members = [m for m in desc.members if m.assignment.topic_partitions]
        except Exception as exc:  # the group does not exist until the first member joins  # noqa: BLE001
            members = [exc]
        if len(members) == n and str(desc.state).endswith("STABLE"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the group never had {n} members with partitions: {members}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
