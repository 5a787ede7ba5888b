"""Kafka adapters (confluent-kafka): a consumer-group source and an acknowledged sink.

The consumer never auto-commits: :meth:`KafkaSource.commit` stores the offsets
of a batch only after its outputs were acknowledged and written (at-least-once).
The producer is idempotent with ``acks=all``; :meth:`KafkaSink.flush` raises
:class:`DeliveryError` if any message failed, so that the batch is retried
rather than committed. With ``transactional=True`` the sink produces the
outputs and commits the input offsets in one transaction, so ``read_committed``
consumers see each output exactly once even across worker crashes.

Any Kafka cluster works: only ``bootstrap.servers`` (and, for a secured
cluster, the librdkafka ``security.*``/``sasl.*`` settings in ``kafka.extra``)
differ from the local one started by ``albireo services up kafka``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from broker.errors import Unreachable
from broker.ports import (
    DeliveryError,
    Message,
    Rebalanced,
    TransactionalSink,
    TransactionalSource,
    TransactionOffsets,
)
from broker.watchdog import run_within

log = logging.getLogger("albireo.kafka")


def _rebalance_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    names = ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID",
             "_ASSIGNMENT_LOST", "NOT_COORDINATOR")
    return frozenset(getattr(KafkaError, n) for n in names if hasattr(KafkaError, n))



def _client_conf(bootstrap: str, extra: dict[str, str] | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap}
    conf.update(extra or {})
    return conf


class KafkaSource(TransactionalSource):
    """A member of a consumer group over ``topics``; rebalances are logged."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: list[str],
        extra: dict[str, str] | None = None,
        auto_offset_reset: str = "earliest",
        batch_linger_s: float = 0.05,
    ):
        from confluent_kafka import Consumer

        self.batch_linger_s = batch_linger_s
        conf = _client_conf(bootstrap, extra)
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": auto_offset_reset,
                "partition.assignment.strategy": "cooperative-sticky",
                "isolation.level": "read_committed",
                # a killed worker's partitions move to the survivors within 10 s
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 2000,
            }
        )
        conf.update(extra or {})
        self.group_id = group_id
        self.assigned: set[tuple[str, int]] = set()
        self.consumer = Consumer(conf)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned.update((p.topic, p.partition) for p in partitions)
        log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        self.assigned.difference_update((p.topic, p.partition) for p in partitions)
        log.info("revoked %s", [f"{p.topic}[{p.partition}]" for p in partitions])

    @property
    def ready(self) -> bool:
        """True once the group gave this worker partitions (idle time counts from then)."""
        return bool(self.assigned)

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages``: wait up to ``timeout_s`` for the first, then ``batch_linger_s`` for the rest.

        ``consume(num_messages=n, timeout=t)`` alone returns only when it has ``n`` messages or
        ``t`` has passed, so a stream slower than ``batch_size`` per ``poll_timeout_s`` paid the
        whole timeout on every batch: that second sat in every alert's latency. Here a batch
        leaves as soon as the stream pauses for ``batch_linger_s``; librdkafka prefetches, so
        what the broker already holds is in the local queue and costs no wait at all.
        """
        out = []
        first = self.consumer.consume(num_messages=1, timeout=timeout_s)
        rest = self.consumer.consume(num_messages=max_messages - 1, timeout=self.batch_linger_s) \
            if first and max_messages > 1 else []
        for m in first + rest:
            err = m.error()
            if err is not None:
                if err.code() == err._PARTITION_EOF:  # noqa: SLF001 - librdkafka constant
                    continue
                log.warning("consumer error: %s", err)
                continue
            headers = {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (m.headers() or [])}
            ts_type, ts = m.timestamp()
            out.append(Message(m.value() or b"", m.topic(), m.partition(), m.offset(), m.key(), ts if ts_type else None, headers))
        return out

    def offsets_for(self, messages: list[Message]) -> list:
        """The next offset to read per partition after ``messages`` (what a commit stores)."""
        from confluent_kafka import TopicPartition

        high: dict[tuple[str, int], int] = {}
        for m in messages:
            k = (m.source, m.partition)
            high[k] = max(high.get(k, -1), m.offset)
        return [TopicPartition(t, p, o + 1) for (t, p), o in high.items()]

    def commit(self, messages: list[Message]) -> None:
        from confluent_kafka import KafkaException

        if messages:
            try:
                self.consumer.commit(offsets=self.offsets_for(messages), asynchronous=False)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() in _rebalance_codes():
                    raise Rebalanced(f"offsets not committed, the group moved on: {exc.args[0]}") from exc
                raise

    def rewind(self, messages: list[Message]) -> None:
        """Seek each still-assigned partition back to the batch's first offset, so it is read again."""
        from confluent_kafka import TopicPartition

        first: dict[tuple[str, int], int] = {}
        for m in messages:
            k = (m.source, m.partition)
            first[k] = min(first.get(k, m.offset), m.offset)
        for (t, p), o in first.items():
            if (t, p) in self.assigned:
                try:
                    self.consumer.seek(TopicPartition(t, p, o))
                except Exception as exc:  # not assigned any more after all: its new owner reads it
                    log.info("not rewinding %s[%d]: %s", t, p, exc)

    def lag(self) -> dict[tuple[str, int], int]:
        """High watermark minus this consumer's position, per assigned partition."""
        from confluent_kafka import TopicPartition

        assigned = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        out = {}
        for tp in self.consumer.position(assigned) if assigned else []:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            out[(tp.topic, tp.partition)] = max(0, high - tp.offset) if tp.offset >= 0 else high
        return out

    def transaction_offsets(self, messages: list[Message]) -> TransactionOffsets:
        return TransactionOffsets(tuple((tp.topic, tp.partition, tp.offset) for tp in self.offsets_for(messages)),
                                  self.consumer.consumer_group_metadata())

    def close(self) -> None:
        self.consumer.close()


class KafkaSink(TransactionalSink):
    """An idempotent producer whose :meth:`flush` proves every message was acknowledged.

    Transactional mode (``transactional_id``): outputs and input offsets commit atomically. The
    id is stable per worker slot (``albireo run``), so a restarted worker fences its zombie. A
    commit that fails is classified: retriable (the commit is retried here), abortable (the
    transaction is aborted and the batch retried by the worker), a rebalance (the batch's
    partitions may have moved: :class:`Rebalanced`, the worker drops the batch and re-polls) or
    fatal (fenced, or the producer is unusable: a new producer is made with the same id, and the
    batch is retried).
    """

    def __init__(self, bootstrap: str, extra: dict[str, str] | None = None, transactional_id: str | None = None,
                 transaction_timeout_ms: int = 300_000):
        conf = _client_conf(bootstrap, extra)
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "zstd",
                "message.max.bytes": 10_000_000,
            }
        )
        if transactional_id:
            conf["transactional.id"] = transactional_id
            conf["transaction.timeout.ms"] = transaction_timeout_ms
        self._conf = conf
        self.transactional = bool(transactional_id)
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self.delivered = 0
        self._in_txn = False
        self._new_producer()

    def _new_producer(self) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(self._conf)
        self._in_txn = False
        if self.transactional:
            self.producer.init_transactions(60)  # fences any older producer with this id

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(f"{msg.topic()}: {err}")
        else:
            self.delivered += 1

    def begin(self) -> None:
        if self.transactional and not self._in_txn:
            self._guard(self.producer.begin_transaction)
            self._in_txn = True

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        self.begin()
        hdrs = [(k, v.encode() if isinstance(v, str) else v) for k, v in (headers or {}).items()]
        while True:
            try:
                self._guard(lambda: self.producer.produce(topic, value=value, key=key, headers=hdrs,
                                                          on_delivery=self._on_delivery))
                break
            except BufferError:  # local queue full: let librdkafka drain, then retry
                self.producer.poll(0.5)
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self.producer.flush(timeout_s)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining or failures:
            raise DeliveryError(f"{remaining} messages unacknowledged, {len(failures)} failed: {failures[:3]}")

    def commit_transaction(self, offsets: TransactionOffsets) -> None:
        """Commit the input ``offsets`` and every output produced since the last commit, atomically."""
        from confluent_kafka import KafkaException, TopicPartition

        self.begin()
        tps = [TopicPartition(t, p, o) for t, p, o in offsets.offsets]
        # librdkafka can block in send_offsets_to_transaction far past its timeout while the group
        # coordinator is away (confluentinc/librdkafka#5456, seen here across a broker restart): a
        # watchdog ends the process instead, and a restarted worker (same transactional id) fences
        # this one's transaction, re-reads the uncommitted batch and re-emits its recorded outputs.
        self._guard(lambda: run_within(
            lambda: self.producer.send_offsets_to_transaction(tps, offsets.group_metadata, 30),
            seconds=45, what="send_offsets_to_transaction"))
        for attempt in range(5):
            try:
                self.producer.commit_transaction(60)
                break
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and not err.txn_requires_abort() and attempt < 4:
                    log.warning("transaction commit will be retried: %s", err)
                    continue
                self._fail(exc)
        self._in_txn = False

    def _guard(self, call):
        """Run a producer call; turn its Kafka errors into the worker's classes (see the class docstring)."""
        from confluent_kafka import KafkaException

        try:
            return call()
        except KafkaException as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        err = exc.args[0] if exc.args else None
        code = err.code() if err is not None and hasattr(err, "code") else None
        if err is not None and err.fatal():
            log.error("the producer failed fatally (%s); starting a new one with the same transactional id", err)
            try:
                self.producer.flush(0)
            finally:
                self._new_producer()
            raise DeliveryError(f"producer fenced or failed: {err}") from exc
        if code in _rebalance_codes():
            raise Rebalanced(f"the consumer group moved on while committing: {err}") from exc
        raise DeliveryError(f"transaction failed: {err}") from exc

    def abort(self) -> None:
        if self.transactional and self._in_txn:
            from confluent_kafka import KafkaException

            try:
                self.producer.abort_transaction(60)
            except KafkaException as exc:
                if exc.args and exc.args[0].fatal():
                    self._new_producer()
                else:
                    raise
            self._in_txn = False

    def close(self) -> None:
        self.producer.flush(10)


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 1, extra: dict[str, str] | None = None) -> None:
    """Create topics that do not exist yet (idempotent)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(_client_conf(bootstrap, extra))
    existing = set(admin.list_topics(timeout=15).topics)
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not new:
        return
    for topic, fut in admin.create_topics(new).items():
        try:
            fut.result(30)
        except Exception as exc:  # a concurrent creator won the race: fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc


def check_reachable(bootstrap: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`~broker.errors.Unreachable` unless some bootstrap server accepts a TCP connection.

    A fast, clear answer before librdkafka's own retries (which would only log and wait).
    """
    import socket

    errors = []
    for hostport in bootstrap.split(","):
        hostport = hostport.strip().split("://")[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 9092)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{hostport}: {exc}")
    raise Unreachable(f"cannot reach Kafka at {bootstrap} ({'; '.join(errors)}). Start the local one with "
                      "`albireo services up kafka`, or set kafka.bootstrap_servers "
                      "(ALBIREO_KAFKA__BOOTSTRAP_SERVERS).")


def consumer_group_status(bootstrap: str, group_id: str, topics: list[str], extra: dict[str, str] | None = None,
                          sample_s: float = 0.0) -> dict[str, Any]:
    """Members, assigned partitions, committed offsets, end offsets and lag of a consumer group.

    With ``sample_s`` > 0 the committed offsets are read twice that far apart, giving a rate.
    """
    import time

    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    conf = _client_conf(bootstrap, extra)
    admin = AdminClient(conf)
    desc = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id].result()
    members = [{"client_id": m.client_id, "host": m.host,
                "partitions": [f"{tp.topic}[{tp.partition}]" for tp in (m.assignment.topic_partitions or [])]}
               for m in desc.members]
    meta = admin.list_topics(timeout=10)
    tps = [TopicPartition(t, p) for t in topics if t in meta.topics for p in sorted(meta.topics[t].partitions)]

    def committed() -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        req = ConsumerGroupTopicPartitions(group_id, tps)
        res = admin.list_consumer_group_offsets([req])[group_id].result()
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}

    first = committed()
    rate = None
    if sample_s > 0:
        time.sleep(sample_s)
        second = committed()
        moved = sum(max(0, second[k] - max(first.get(k, 0), 0)) for k in second if second[k] >= 0)
        rate, first = moved / sample_s, second
    from confluent_kafka import Consumer

    probe = Consumer({**conf, "group.id": f"{group_id}-status-probe", "enable.auto.commit": False})
    try:
        parts = []
        for tp in tps:
            _, high = probe.get_watermark_offsets(tp, timeout=10)
            c = first.get((tp.topic, tp.partition), -1)
            parts.append({"topic": tp.topic, "partition": tp.partition, "committed": c, "end": high,
                          "lag": high - max(c, 0)})
    finally:
        probe.close()
    return {"group": group_id, "state": str(desc.state).split(".")[-1], "members": members, "partitions": parts,
            "lag": sum(p["lag"] for p in parts), "rate": rate}
