"""Multi-messenger acceptance: the same scenario (``tests/mm_scenario.py``) on two stacks.

* ``embedded`` — files in, SQLite store and index, stream files out (no server);
* ``production`` — Kafka in and out (real topics, consumer groups), Cassandra store, Elasticsearch
  index: the shared real servers, with a keyspace, index and topics of the test's own.

Both directions: notices first then the loci (the pipeline's coincidence stage tags them as they
arrive), and loci first then the notices (the notice pipeline finds the stored loci through the
index and re-tags them). Exactly the expected loci are tagged; a devkit filter with
``REQUIRED_GRAV_WAVE_PROB_REGION = 90`` runs exactly where the devkit's own check says it should,
and sees the event metadata; the retractions remove every tag and entry, and say so on the streams.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from broker.config import load_config
from broker.emit import decode_locus_message
from tests import mm_scenario

STACKS = ["embedded", pytest.param("production", marks=pytest.mark.integration)]


class Embedded:
    """Files in and out, SQLite store and index: ``albireo demo`` and ``albireo notices ingest``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.cfg = load_config(env={})
        self.cfg.store.path = str(tmp / "store.sqlite")
        self.cfg.search.path = str(tmp / "index.sqlite")
        mm_scenario.configure(self.cfg)
        self.out = tmp / "streams"

    def alerts(self, packets: list[bytes]):
        from broker.adapters.streams.files import write_stream_file
        from broker.assemble import embedded_worker

        path = self.tmp / f"packets-{uuid.uuid4().hex[:6]}.avro-stream"
        write_stream_file(packets, path)
        with embedded_worker(self.cfg, [path], self.out) as a:
            return a.worker.run()

    def notices(self, files: list[Path]):
        from broker.assemble import embedded_notice_worker

        with embedded_notice_worker(self.cfg, files, self.out) as a:
            return a.worker.run()

    def stream(self, tag: str) -> list[dict]:
        from broker.adapters.streams.files import iter_stream_file

        path = self.out / f"{self.cfg.kafka.output_prefix}{tag}.avro-stream"
        return [decode_locus_message(m) for m in iter_stream_file(path)] if path.exists() else []

    def open_store(self):
        from broker.assemble import open_store

        return open_store(self.cfg)

    def cleanup(self) -> None:
        pass


class Production:
    """Kafka topics, a Cassandra keyspace and an Elasticsearch index of this test's own."""

    def __init__(self, tmp: Path):
        from broker.ops import services

        services.up(["kafka", "cassandra", "elasticsearch"])
        run = uuid.uuid4().hex[:10]
        self.tmp = tmp
        self.kafka = services.endpoints()["kafka"]
        cfg = self.cfg = load_config(env={})
        cfg.kafka.bootstrap_servers = self.kafka
        cfg.kafka.input_topics = [f"mm-alerts-{run}"]
        cfg.kafka.group_id = f"mm-g-{run}"
        cfg.kafka.output_prefix = f"mm-{run}.loci."
        cfg.kafka.dead_letter_topic = f"mm-{run}.dlq"
        cfg.kafka.batch_size = 50
        cfg.store.backend, cfg.store.keyspace = "cassandra", f"mm_{run}"
        cfg.search.backend, cfg.search.index_name = "elasticsearch", f"mm-{run}"
        cfg.search.outbox_path = str(tmp / "outbox.sqlite")
        mm_scenario.configure(cfg)
        cfg.multimessenger.notice_topics = [f"mm-notices-{run}"]
        cfg.multimessenger.group_id = f"mm-ng-{run}"
        cfg.multimessenger.dead_letter_topic = f"mm-{run}.notices.dlq"
        self.cfg = cfg

    def alerts(self, packets: list[bytes]):
        from broker.adapters.streams.files import write_stream_file
        from broker.assemble import kafka_worker
        from broker.ops.loadgen import replay

        path = self.tmp / f"packets-{uuid.uuid4().hex[:6]}.avro-stream"
        write_stream_file(packets, path)
        stats = replay([path], topic=self.cfg.kafka.input_topics[0], bootstrap=self.kafka, progress=False)
        assert stats.messages == len(packets)
        return self._drain(kafka_worker(self.cfg), len(packets))

    def notices(self, files: list[Path]):
        from broker.assemble import kafka_notice_worker
        from broker.ops.loadgen import replay

        stats = replay(files, topic=self.cfg.multimessenger.notice_topics[0], bootstrap=self.kafka, progress=False,
                       notices=True)
        assert stats.messages == len(files) and stats.undecodable == 0
        return self._drain(kafka_notice_worker(self.cfg), len(files))

    @staticmethod
    def _drain(assembly, n: int):
        """Run the group member until it has read the ``n`` new messages (bounded), then close it (index drained)."""
        with assembly:
            total = None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                s = assembly.worker.run(max_messages=n - (total.result.messages if total else 0), idle_timeout_s=8)
                if total is None:
                    total = s
                else:
                    total.result.add(s.result)
                if total.result.messages >= n:
                    break
            assert total.result.messages == n, f"read {total.result.messages} of {n} messages"
            return total

    def stream(self, tag: str) -> list[dict]:
        from tests.integration.test_pipeline_kafka import _consume_all

        out = []
        for m in _consume_all(self.kafka, self.cfg.kafka.output_prefix + tag, idle_s=3.0):
            rec = decode_locus_message(m.value())
            headers = {k: v.decode() for k, v in (m.headers() or [])}
            assert m.key() == rec["locus_id"].encode()
            rec["_headers"] = headers
            out.append(rec)
        return out

    def open_store(self):
        from broker.assemble import open_store

        return open_store(self.cfg)

    def cleanup(self) -> None:
        from broker.assemble import open_index

        s = self.open_store()
        s.drop_keyspace()
        s.close()
        ix = open_index(self.cfg)
        ix.drop()
        ix.close()


@pytest.fixture
def stack(request, tmp_path, shared_data):
    s = Embedded(tmp_path) if request.param == "embedded" else Production(tmp_path)
    store = s.open_store()
    from broker.filtering import registry

    registry.add_revision(store, mm_scenario.FILTER_CODE, "astronomer", approved_by="operator", enable=True)
    store.close()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def scenario(shared_data):
    return mm_scenario.build(shared_data)


def _actions(recs: list[dict], tag: str) -> dict[str, list[str]]:
    """Locus id → what its messages on ``tag``'s stream said, in order (``tag`` / ``untag``)."""
    out: dict[str, list[str]] = {}
    for r in recs:
        action = r["properties"].get("mm_action") or "tag"
        assert (action == "tag") == (tag in r["tags"]), r  # an untag message is the locus without the tag
        if "_headers" in r:
            assert r["_headers"].get("albireo.action", "tag") == action
        out.setdefault(r["locus_id"], []).append(action)
    return out


def _object_ids(store, locus_ids) -> set[str]:
    loci = store.load_loci(list(locus_ids), with_alerts=False)
    return {x.internal_properties.get("ztf_object_id") for x in loci.values()}


def _retract_and_check(stack, scenario, tmp_path) -> None:
    summary = stack.notices(scenario.notice_files(tmp_path / "retractions", retractions=True))
    assert summary.result.rejected_total == 0
    store = stack.open_store()
    try:
        assert mm_scenario.check_tags(scenario, store, retracted=True) == []
        assert store.event("MS181101ab")["status"] == "retracted"
        assert store.event("IceCube-137840_57034692")["status"] == "retracted"
        for tag, expected in (("in_gw_90", scenario.expected_gw), ("in_neutrino_90", scenario.expected_nu)):
            acts = _actions(stack.stream(tag), tag)
            untagged = {lid for lid, a in acts.items() if a[-1] == "untag"}
            assert _object_ids(store, untagged) == expected, tag  # the retraction said so, for each of them
            assert all(a.count("untag") == 1 for a in acts.values())
    finally:
        store.close()


@pytest.mark.parametrize("stack", STACKS, indirect=True)
def test_notices_first_then_loci(stack, scenario, tmp_path):
    n = stack.notices(scenario.notice_files(tmp_path / "notices"))
    assert (n.result.packets, n.result.rejected_total, n.result.loci_updated) == (2, 0, 0)  # no loci yet
    a = stack.alerts(scenario.packets)
    assert a.result.packets == len(scenario.packets) and a.result.loci_created == len(scenario.packets)
    store = stack.open_store()
    try:
        assert mm_scenario.check_tags(scenario, store) == []
        assert mm_scenario.check_filter(store) == []
        for tag, expected in (("in_gw_90", scenario.expected_gw), ("in_neutrino_90", scenario.expected_nu)):
            acts = _actions(stack.stream(tag), tag)
            assert _object_ids(store, acts) == expected and all(v == ["tag"] for v in acts.values())
        assert a.result.tags["gw_counterpart_candidate"] == len(scenario.expected_gw)
    finally:
        store.close()
    _retract_and_check(stack, scenario, tmp_path)


@pytest.mark.parametrize("stack", STACKS, indirect=True)
def test_loci_first_then_notices(stack, scenario, tmp_path):
    a = stack.alerts(scenario.packets)
    assert a.result.loci_created == len(scenario.packets) and not any(t.startswith("in_") for t in a.result.tags)
    n = stack.notices(scenario.notice_files(tmp_path / "notices"))
    assert n.result.packets == 2 and n.result.rejected_total == 0
    assert n.result.loci_updated == len(scenario.expected_gw) + len(scenario.expected_nu)
    store = stack.open_store()
    try:
        assert mm_scenario.check_tags(scenario, store) == []
        assert mm_scenario.check_filter(store) == []  # re-filtered on the notice's arrival
        for tag, expected in (("in_gw_90", scenario.expected_gw), ("in_neutrino_90", scenario.expected_nu),
                              ("gw_counterpart_candidate", scenario.expected_gw)):
            acts = _actions(stack.stream(tag), tag)
            assert _object_ids(store, acts) == expected and all(v == ["tag"] for v in acts.values()), tag
    finally:
        store.close()
    _retract_and_check(stack, scenario, tmp_path)
