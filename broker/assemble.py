"""The one place that builds a pipeline and a worker from the configuration.

``albireo demo``, ``albireo run``, ``albireo serve``, the benchmarks and the tests all assemble
through these functions, so the embedded run and the production run differ only in the adapters
picked here (:mod:`broker.ports` names the contracts; :mod:`broker.adapters` holds both kinds):

============  ==========================================  ==========================================
port          embedded (``albireo demo``, defaults)       production (``albireo run``)
============  ==========================================  ==========================================
Source        ``FileSource`` over packet files            ``KafkaSource`` (consumer group)
Sink          ``StreamFileSink`` (one file per topic)     ``KafkaSink`` (optionally transactional)
Store         ``SQLiteStore``                             ``CassandraStore`` (``store.backend``)
Index         ``SQLiteIndex``                             ``ElasticsearchIndex`` (``search.backend``)
============  ==========================================  ==========================================

Client libraries are imported lazily, inside the function that opens their adapter, so the
embedded mode needs none of them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.association import Associator
from broker.config import Config
from broker.emit import StreamRouter
from broker.faults import FaultPlan
from broker.metrics import Metrics
from broker.pipeline import Pipeline
from broker.ports import (
    CatalogMatcher,
    FilterRunner,
    Index,
    IndexWriter,
    Sink,
    Source,
    Store,
    TransactionalSink,
)
from broker.worker import Worker

log = logging.getLogger("albireo.assemble")


class StoreMissing(FileNotFoundError):
    """An embedded store was asked for that does not exist (and creating one was not allowed)."""


# ---- adapters ---------------------------------------------------------------------------------
def open_store(cfg: Config, *, create: bool = True) -> Store:
    """The configured store: ``sqlite`` (embedded default) or ``cassandra``.

    With ``create=False`` a missing SQLite file is an error (:class:`StoreMissing`) instead of a
    new, empty store: a portal pointed at a typo must say so, not serve nothing.
    """
    order = Associator(cfg.association.radius_arcsec).order
    s = cfg.store
    if s.backend == "sqlite":
        if not create and not Path(s.path).exists():
            raise StoreMissing(f"no store at {s.path}")
        from broker.adapters.storage.sqlite import SQLiteStore

        return SQLiteStore(s.path, order)
    if s.backend == "cassandra":
        from broker.adapters.storage.cassandra import CassandraStore

        return CassandraStore(s.cassandra_hosts, s.cassandra_port, s.keyspace, order, s.consistency,
                              max_in_flight=s.cassandra_max_in_flight, batch_by=s.cassandra_batch_by)
    raise ValueError(f"store.backend {s.backend!r}: expected 'sqlite' or 'cassandra'")


def open_index(cfg: Config, *, create: bool = True) -> Index:
    """The configured index: ``sqlite`` (embedded default) or ``elasticsearch``."""
    s = cfg.search
    if s.backend == "sqlite":
        if not create and not Path(s.path).exists():
            raise StoreMissing(f"no index at {s.path}")
        from broker.adapters.search.sqlite import SQLiteIndex

        return SQLiteIndex(s.path)
    if s.backend == "elasticsearch":
        from broker.adapters.search.elasticsearch import ElasticsearchIndex

        return ElasticsearchIndex(s.elasticsearch_url, s.index_name)
    raise ValueError(f"search.backend {s.backend!r}: expected 'sqlite' or 'elasticsearch'")


def open_index_writer(cfg: Config, index: Index | None = None) -> IndexWriter:
    """The pipeline's index writer: a durable outbox beside the index, drained in the background."""
    from broker.adapters.outbox import OutboxIndexWriter

    return OutboxIndexWriter(index if index is not None else open_index(cfg), outbox_path=outbox_path(cfg))


def outbox_path(cfg: Config) -> str:
    """Where this worker's outbox lives (``search.outbox_path``, default beside the embedded index)."""
    if cfg.search.outbox_path:
        return cfg.search.outbox_path
    return str(Path(cfg.search.path).with_suffix(".outbox.sqlite"))


def open_catalogs(cfg: Config, *, build_defaults: bool = True) -> CatalogMatcher | None:
    """The enabled catalog set, or None when cross-matching is off.

    ``build_defaults`` builds OpenNGC on first use (the pipeline); the portal passes False and
    gets None when no catalog was ever built, so its catalog pages say so.
    """
    if not cfg.catalogs.enabled:
        return None
    from broker.crossmatch import CatalogSet, ensure_default_catalogs

    root = Path(cfg.catalogs.root)
    if build_defaults:
        root.mkdir(parents=True, exist_ok=True)
        ensure_default_catalogs(root)
    elif not root.is_dir():
        return None
    return CatalogSet.open(root, verify=build_defaults)


def schema_registry(cfg: Config) -> Any:
    """A Confluent schema-registry client when one is configured (else the local Rubin schemas)."""
    if not cfg.kafka.schema_registry_url:
        return None
    from broker.ingest.registries import ConfluentRegistryClient

    return ConfluentRegistryClient(cfg.kafka.schema_registry_url)


def build_filters(cfg: Config, store: Store | None = None) -> FilterRunner:
    """Built-ins in process plus the registry's enabled revisions in the sandbox pool.

    The registry is read from ``store`` (default: the configured store, opened on the first
    refresh) every ``filters.refresh_s`` seconds, so enabling a filter needs no restart. Errors go
    to ``filters.webhook_url`` when set; automatic disables are written back to the registry so
    that every worker and the portal see them.
    """
    from broker.filtering.platform import PlatformRunner
    from broker.filtering.registry import enabled_specs, set_status
    from broker.filtering.runner import ErrorPolicy, LoadedFilter, load_builtin_filters
    from broker.filtering.sandbox import SandboxLimits

    f = cfg.filters
    holder: dict[str, Store | None] = {"store": store}

    def registry_store() -> Store:
        if holder["store"] is None:
            holder["store"] = open_store(cfg)
        return holder["store"]

    def revisions():
        if holder["store"] is None and cfg.store.backend == "sqlite" and not Path(cfg.store.path).exists():
            return []  # no store yet, so no registry: do not create one as a side effect
        return enabled_specs(registry_store())

    notifier = None
    if f.webhook_url:
        from broker.filtering.notify import WebhookNotifier

        notifier = WebhookNotifier(f.webhook_url)

    def on_disable(lf: LoadedFilter, err) -> None:
        if notifier is not None:
            notifier.on_disable(lf, err)
        if lf.isolation == "sandbox":
            try:
                set_status(registry_store(), lf.name, "disabled", lf.revision, reason=lf.disabled_reason)
            except Exception as exc:  # the registry being down must not stop the stream
                log.error("could not record that filter %s was disabled: %s", lf.name, exc)

    policy = ErrorPolicy.from_config(f, on_disable=on_disable,
                                     on_error=notifier.on_error if notifier is not None else None)
    limits = SandboxLimits.from_config(f)
    return PlatformRunner(load_builtin_filters(f.builtin), revisions=revisions if f.registry else None,
                          limits=limits, policy=policy, refresh_s=f.refresh_s, slow_s=f.timeout_s)


def coincidence_settings(cfg: Config) -> Any:
    """The multi-messenger stage's settings from ``[multimessenger]``."""
    from broker.multimessenger.coincidence import Settings
    from broker.multimessenger.notice import GW, NEUTRINO

    mm = cfg.multimessenger
    return Settings(windows={GW: (mm.gw_days_before, mm.gw_days_after),
                             NEUTRINO: (mm.neutrino_days_before, mm.neutrino_days_after)},
                    tag_levels=tuple(float(x) for x in mm.credible_levels), max_level=float(mm.max_contour_level),
                    accept_test=mm.accept_test_notices)


def build_coincidence(cfg: Config, store: Store, metrics: Metrics | None = None) -> Any:
    """The pipeline's coincidence stage (None when ``multimessenger.enabled`` is off)."""
    if not cfg.multimessenger.enabled:
        return None
    from broker.multimessenger.coincidence import CoincidenceStage

    return CoincidenceStage(store, coincidence_settings(cfg), metrics=metrics)


def configure_ingest(cfg: Config) -> None:
    """Install the ``[ingest]`` bounds for every decode in this process (one process, one config)."""
    from broker.ingest.framing import IngestLimits, configure_limits

    configure_limits(IngestLimits(**dataclasses.asdict(cfg.ingest)))


def build_pipeline(cfg: Config, store: Store, sink: Sink, *, index_writer: IndexWriter | None = None,
                   catalogs: CatalogMatcher | None = None, filters: FilterRunner | None = None,
                   metrics: Metrics | None = None, associator: Associator | None = None,
                   exactly_once: bool = False) -> Pipeline:
    """The pipeline over the given adapters, its stages set from ``cfg``."""
    metrics = metrics or Metrics()
    configure_ingest(cfg)
    return Pipeline(
        store=store,
        sink=sink,
        filters=filters if filters is not None else build_filters(cfg, store=store),
        associator=associator or Associator.from_config(cfg.association),
        output_prefix=cfg.kafka.output_prefix,
        dead_letter_topic=cfg.kafka.dead_letter_topic,
        index_writer=index_writer,
        catalogs=catalogs,
        metrics=metrics,
        lsst_schema_version=cfg.kafka.schemaless_lsst_version,
        ztf_schema_version=cfg.kafka.schemaless_ztf_version,
        schema_registry=schema_registry(cfg),
        exactly_once=exactly_once,
        coincidence=build_coincidence(cfg, store, metrics),
        faults=FaultPlan.parse(cfg.service.faults),
        router=stream_router(cfg),
    )


def build_notice_pipeline(cfg: Config, store: Store, index: Index, sink: Sink, *,
                          index_writer: IndexWriter | None = None, filters: FilterRunner | None = None,
                          metrics: Metrics | None = None) -> Any:
    """The notice pipeline (``broker.multimessenger.stage``) over the given adapters, set from ``[multimessenger]``."""
    from broker.adapters.http import HttpSkymapFetcher
    from broker.multimessenger.stage import NoticePipeline, NoticeSettings

    mm = cfg.multimessenger
    fetcher = HttpSkymapFetcher(mm.skymap_timeout_s, mm.skymap_max_bytes, mm.skymap_dir) if mm.download_skymaps \
        else None
    return NoticePipeline(
        store, index, sink, index_writer=index_writer,
        filters=filters if filters is not None else build_filters(cfg, store=store), fetcher=fetcher,
        settings=NoticeSettings(coincidence=coincidence_settings(cfg), max_bytes=mm.max_notice_bytes,
                                download_skymaps=mm.download_skymaps),
        output_prefix=cfg.kafka.output_prefix, dead_letter_topic=mm.dead_letter_topic, metrics=metrics,
        alerts=build_alert_publisher(cfg, store, index, sink) if mm.issue_alerts else None)


def build_alert_publisher(cfg: Config, store: Store, index: Index, sink: Sink | None) -> Any:
    """Outgoing alerts (``multimessenger.outgoing``) over the given store, index and sink (None: store only)."""
    from broker.multimessenger.outgoing.publish import AlertPublisher, AlertTopics

    return AlertPublisher(store, index, sink, AlertTopics(cfg.multimessenger.alert_topic_prefix))


def stream_router(cfg: Config) -> StreamRouter:
    """Which topics and encoding each tagged stream is published with (``[streams]``, ``kafka.output_prefix``)."""
    s = cfg.streams
    return StreamRouter(output_prefix=cfg.kafka.output_prefix, antares_prefix=s.antares_prefix,
                        formats=dict(s.formats), default_format=s.default_format)


def open_stream_sink(cfg: Config, streams_dir: str | Path | None = None) -> Sink:
    """The sink tagged streams are published to outside a worker (``albireo filter backfill --publish``).

    ``streams_dir``: one ``.avro-stream`` file per topic under it, as the embedded worker
    (``albireo demo``) writes them; None: Kafka at ``kafka.bootstrap_servers``, as ``albireo run``.
    Either way the same sink classes the workers use.
    """
    if streams_dir is not None:
        from broker.adapters.streams.files import StreamFileSink

        return StreamFileSink(streams_dir)
    from broker.adapters.streams.kafka import KafkaSink

    return KafkaSink(cfg.kafka.bootstrap_servers, extra=cfg.kafka.extra)


# ---- whole workers ----------------------------------------------------------------------------
@dataclass
class Assembly:
    """A worker and everything it was built from; :meth:`close` releases them in the right order."""

    worker: Worker
    #: the alert :class:`Pipeline`, or the notice pipeline (``multimessenger.stage.NoticePipeline``).
    pipeline: Any
    source: Source
    sink: Sink
    store: Store
    index: Index
    index_writer: IndexWriter
    catalogs: CatalogMatcher | None
    closed: bool = field(default=False, repr=False)

    def close(self, index_timeout_s: float = 120.0) -> bool:
        """Close source, sink, filters, index writer (draining it, bounded) and store; True if the index caught up."""
        if self.closed:
            return True
        self.closed = True
        done = True
        for step in (self.source.close, self.sink.close, self.pipeline.filters.close):
            try:
                step()
            except Exception as exc:  # closing one part must not leave the others open
                log.error("closing %s failed: %s", step, exc)
        done = self.index_writer.close(timeout=index_timeout_s)
        self.index.close()
        self.store.close()
        return done

    def __enter__(self) -> Assembly:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def embedded_worker(cfg: Config, inputs: Iterable[str | Path], out_dir: str | Path, *,
                    filters: FilterRunner | None = None, metrics: Metrics | None = None,
                    batch_size: int | None = None) -> Assembly:
    """Files in, SQLite store and index, one ``.avro-stream`` file per output topic: ``albireo demo``."""
    from broker.adapters.streams.files import FileSource, StreamFileSink

    store = open_store(cfg)
    sink = StreamFileSink(out_dir)
    index = open_index(cfg)
    index_writer = open_index_writer(cfg, index)
    catalogs = open_catalogs(cfg)
    pipeline = build_pipeline(cfg, store, sink, index_writer=index_writer, catalogs=catalogs, filters=filters,
                              metrics=metrics)
    source = FileSource(inputs)
    worker = Worker(pipeline, source, batch_size=batch_size or cfg.kafka.batch_size,
                    decode_ahead=cfg.kafka.decode_ahead)
    return Assembly(worker, pipeline, source, sink, store, index, index_writer, catalogs)


def kafka_worker(cfg: Config, *, filters: FilterRunner | None = None, metrics: Metrics | None = None,
                 transactional_id: str | None = None) -> Assembly:
    """One member of the consumer group: Kafka in and out, the configured store and index: ``albireo run``.

    With ``kafka.transactional`` the sink commits outputs and input offsets in one transaction,
    under ``transactional_id`` (default: derived from the group id and this process).
    """
    from broker.adapters.streams.kafka import KafkaSink, KafkaSource, ensure_topics

    k = cfg.kafka
    ensure_topics(k.bootstrap_servers, [*k.input_topics, k.dead_letter_topic], extra=k.extra)
    store = open_store(cfg)
    source = KafkaSource(k.bootstrap_servers, k.group_id, k.input_topics, extra=k.extra,
                         batch_linger_s=k.batch_linger_s)
    txn_id = None
    if k.transactional:
        import uuid

        txn_id = transactional_id or f"{k.group_id}-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(k.bootstrap_servers, extra=k.extra, transactional_id=txn_id,
                     transaction_timeout_ms=k.transaction_timeout_ms)
    index = open_index(cfg)
    index_writer = open_index_writer(cfg, index)
    catalogs = open_catalogs(cfg)
    pipeline = build_pipeline(cfg, store, sink, index_writer=index_writer, catalogs=catalogs, filters=filters,
                              metrics=metrics, exactly_once=k.transactional)
    txn_sink: TransactionalSink | None = sink if k.transactional else None
    worker = Worker(pipeline, source, batch_size=k.batch_size, poll_timeout_s=k.poll_timeout_s,
                    transactional_sink=txn_sink, decode_ahead=k.decode_ahead)
    return Assembly(worker, pipeline, source, sink, store, index, index_writer, catalogs)


# ---- notice workers (the same machinery over the notice topics) --------------------------------------
def embedded_notice_worker(cfg: Config, inputs: Iterable[str | Path], out_dir: str | Path, *,
                           filters: FilterRunner | None = None, metrics: Metrics | None = None) -> Assembly:
    """Notice files in (JSON, VOEvent XML, Avro), the configured store and index, stream files out."""
    from broker.adapters.streams.files import NOTICE_SUFFIXES, FileSource, StreamFileSink

    store = open_store(cfg)
    sink = StreamFileSink(out_dir)
    index = open_index(cfg)
    index_writer = open_index_writer(cfg, index)
    pipeline = build_notice_pipeline(cfg, store, index, sink, index_writer=index_writer, filters=filters,
                                     metrics=metrics)
    source = FileSource(inputs, suffixes=NOTICE_SUFFIXES)
    worker = Worker(pipeline, source, batch_size=cfg.multimessenger.batch_size)
    return Assembly(worker, pipeline, source, sink, store, index, index_writer, None)


def kafka_notice_worker(cfg: Config, *, filters: FilterRunner | None = None,
                        metrics: Metrics | None = None) -> Assembly:
    """One member of the notice consumer group (``multimessenger.group_id`` on ``notice_topics``)."""
    from broker.adapters.streams.kafka import KafkaSink, KafkaSource, ensure_topics

    k, mm = cfg.kafka, cfg.multimessenger
    from broker.multimessenger.outgoing.publish import TOPICS

    ensure_topics(k.bootstrap_servers, [*mm.notice_topics, mm.dead_letter_topic,
                                        *(mm.alert_topic_prefix + t for t in TOPICS.values())], extra=k.extra)
    store = open_store(cfg)
    source = KafkaSource(k.bootstrap_servers, mm.group_id, mm.notice_topics, extra=k.extra,
                         batch_linger_s=k.batch_linger_s)
    sink = KafkaSink(k.bootstrap_servers, extra=k.extra)
    index = open_index(cfg)
    index_writer = open_index_writer(cfg, index)
    pipeline = build_notice_pipeline(cfg, store, index, sink, index_writer=index_writer, filters=filters,
                                     metrics=metrics)
    worker = Worker(pipeline, source, batch_size=mm.batch_size, poll_timeout_s=k.poll_timeout_s)
    return Assembly(worker, pipeline, source, sink, store, index, index_writer, None)


# ---- who may read the streams and write through the API -----------------------------------------
def open_users(cfg: Config, *, check_reachable_now: bool = True, records_only: bool = False) -> Any:
    """The users service (:class:`broker.access.service.Users`): records plus the configured stream access.

    ``users.stream_access = kafka`` (default) enforces through the broker's admin API (the loopback
    PLAINTEXT listener of the local broker unless ``users.admin_bootstrap`` says otherwise), which
    must answer (checked now unless ``check_reachable_now`` is false: the portal starts without
    Kafka and fails only a grant); ``none`` only records (embedded file streams have no access control).
    ``records_only`` is for what never changes the broker (listing users, API keys).
    """
    from broker.access import LazyStreamAccess, NoStreamAccess
    from broker.access.records import UserRecords
    from broker.access.service import Users

    u = cfg.users
    consumer_bootstrap, ca_file, plain_file = u.consumer_bootstrap, u.ca_file, u.plain_credentials_file
    if not (consumer_bootstrap and ca_file and plain_file):
        from broker.ops import services

        consumer_bootstrap = consumer_bootstrap or services.kafka_consumer_endpoint()
        ca_file = ca_file or str(services.kafka_ca_file())
        plain_file = plain_file or str(services.kafka_plain_credentials_file())
    access: Any = NoStreamAccess()
    if u.stream_access == "kafka" and not records_only:
        bootstrap = u.admin_bootstrap or cfg.kafka.bootstrap_servers

        def kafka_access() -> Any:
            from broker.adapters.streams.kafka_access import KafkaStreamAccess

            return KafkaStreamAccess(bootstrap, plain_file, extra=u.admin_extra or cfg.kafka.extra)

        if check_reachable_now:
            from broker.adapters.streams.kafka import check_reachable
            from broker.errors import Unreachable

            try:
                check_reachable(bootstrap)
            except Unreachable as exc:
                raise Unreachable(f"{exc} (users.stream_access = kafka: user changes are applied to Kafka; "
                                  "set ALBIREO_USERS__STREAM_ACCESS=none to keep records only)") from None
            access = kafka_access()
        else:
            access = LazyStreamAccess(kafka_access)
    return Users(cfg, UserRecords(u.db), access, stream_router(cfg), consumer_bootstrap=consumer_bootstrap,
                 ca_file=ca_file)


# ---- reconstruction scans (``broker.multimessenger.scans``) ---------------------------------------
def scan_registry(cfg: Config) -> dict[str, Any]:
    """The reconstructions by name: the built-ins plus those ``scans.plugins`` register when imported."""
    from broker.multimessenger.scans.reconstructions import REGISTRY, load_plugins

    load_plugins(cfg.scans.plugins)
    return REGISTRY


def scan_limits(cfg: Config) -> Any:
    """What one scan request may ask for (``[scans]`` max_nside, max_first_pixels, max_step_pixels)."""
    from broker.multimessenger.scans.model import ScanLimits

    s = cfg.scans
    return ScanLimits(max_nside=s.max_nside, max_first_pixels=s.max_first_pixels, max_step_pixels=s.max_step_pixels)


def _scan_queue(cfg: Config, group: str, topics: list[str], *, partitions: dict[str, int]) -> tuple[Source, Sink]:
    """A consumer of ``group`` over ``topics`` and a producer, on the configured scan queue."""
    s = cfg.scans
    if s.queue == "sqlite":
        from broker.adapters.streams.sqlite_queue import QueueSink, QueueSource

        return QueueSource(s.queue_path, group, topics, lease_s=s.lease_s), QueueSink(s.queue_path)
    if s.queue == "kafka":
        from broker.adapters.streams.kafka import KafkaSink, KafkaSource, ensure_topics

        k = cfg.kafka
        for topic, n in partitions.items():
            ensure_topics(k.bootstrap_servers, [topic], partitions=n, extra=k.extra)
        return KafkaSource(k.bootstrap_servers, group, topics, extra=k.extra), KafkaSink(k.bootstrap_servers,
                                                                                         extra=k.extra)
    raise ValueError(f"scans.queue {s.queue!r}: expected 'sqlite' or 'kafka'")


def _scan_partitions(cfg: Config) -> dict[str, int]:
    from broker.multimessenger.scans.server import topics

    lanes, results = topics(cfg.scans.topic_prefix)
    return {**{t: cfg.scans.partitions for t in lanes.values()}, results: 1}


def scan_worker(cfg: Config, store: Store | None = None) -> Any:
    """One ``albireo scan-worker``: both lanes' task consumers, a result producer, the store (for aborts)."""
    from broker.multimessenger.scans.server import topics
    from broker.multimessenger.scans.worker import ScanWorker

    lanes, results = topics(cfg.scans.topic_prefix)
    parts = _scan_partitions(cfg)
    realtime, sink = _scan_queue(cfg, f"{cfg.scans.group_id}.realtime", [lanes["realtime"]], partitions=parts)
    backfill, _ = _scan_queue(cfg, f"{cfg.scans.group_id}.backfill", [lanes["backfill"]], partitions={})
    return ScanWorker(realtime, backfill, sink, results, store if store is not None else open_store(cfg),
                      scan_registry(cfg), batch_size=cfg.scans.batch_size)


def scan_server(cfg: Config, store: Store | None = None) -> Any:
    """The ``albireo scan-server``: the results consumer, a task producer and the store."""
    from broker.multimessenger.scans.server import ScanServer, ServerSettings, topics

    s = cfg.scans
    lanes, results = topics(s.topic_prefix)
    source, sink = _scan_queue(cfg, s.server_group_id, [results], partitions=_scan_partitions(cfg))
    return ScanServer(store if store is not None else open_store(cfg), source, sink,
                      ServerSettings(task_topics=lanes, result_topic=results, pixels_per_task=s.pixels_per_task,
                                     refine_best=s.refine_best, max_step_pixels=s.max_step_pixels,
                                     resend_after_s=s.resend_after_s))
