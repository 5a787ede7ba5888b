"""One typed configuration: defaults that work, a TOML file, then environment overrides.

Precedence (lowest to highest): the defaults below (the embedded, server-less
setup), the TOML file given with ``--config`` (or ``ALBIREO_CONFIG``), then
environment variables named ``ALBIREO_<SECTION>__<KEY>`` (double underscore
between section and key, e.g. ``ALBIREO_KAFKA__BOOTSTRAP_SERVERS``).

Every value is typed by its dataclass field, so a bad override fails at start-up
with the name of the setting rather than deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from broker.errors import UserError

DEFAULT_HOME = Path(os.environ.get("ALBIREO_HOME", Path.home() / ".cache" / "albireo"))


@dataclass
class AssociationConfig:
    #: alerts within this distance of a locus join it (ANTARES uses 1").
    radius_arcsec: float = 1.0
    #: an alert of a survey object (ZTF objectId, Rubin diaObjectId) that a locus already holds joins
    #: that locus within this distance, even past ``radius_arcsec`` (ZTF itself associates within 1.5");
    #: 0 turns it off; at most 2 × radius_arcsec.
    object_radius_arcsec: float = 2.0


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "albireo"
    #: input topics (ZTF/LSST alert streams).
    input_topics: list[str] = field(default_factory=lambda: ["ztf-alerts"])
    #: prefix of the per-tag output topics: ``<prefix><tag>``.
    output_prefix: str = "albireo.loci."
    dead_letter_topic: str = "albireo.dlq"
    #: how many messages one pipeline batch takes at most.
    batch_size: int = 500
    poll_timeout_s: float = 1.0
    #: once a batch's first message is in, wait at most this long for more (up to batch_size):
    #: a batch leaves when the stream pauses, not when poll_timeout_s runs out (latency).
    batch_linger_s: float = 0.05
    #: decode the next batch in a thread while the current one is in its later stages. Off: measured
    #: on the production stack it did not pay (58-60 alerts/s against 59-60 without, docs/operations.md).
    decode_ahead: bool = False
    #: Produce outputs and commit input offsets in one Kafka transaction (exactly once for read_committed).
    transactional: bool = False
    #: how long the broker lets a transaction stay open before it aborts it (and fences the producer).
    transaction_timeout_ms: int = 300_000
    #: Confluent schema registry for Confluent-framed input; empty = the Rubin schemas of lsst-alert-packet.
    schema_registry_url: str = ""
    #: writer schema version (e.g. "7.1") of *schemaless* Rubin payloads; empty = none expected.
    schemaless_lsst_version: str = ""
    #: writer schema version (one of schemas/ztf/, e.g. "3.2") of *schemaless* ZTF payloads; empty = none
    #: expected. At most one of the two schemaless versions can be set.
    schemaless_ztf_version: str = ""
    #: extra librdkafka settings (security.protocol, sasl.*, ...).
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class StoreConfig:
    #: ``sqlite`` (embedded default) or ``cassandra``.
    backend: str = "sqlite"
    path: str = str(DEFAULT_HOME / "albireo.sqlite")
    cassandra_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = 9042
    keyspace: str = "albireo"
    consistency: str = "LOCAL_QUORUM"
    #: most Cassandra requests one worker keeps outstanding (the write window; its backpressure).
    cassandra_max_in_flight: int = 64
    #: what one unlogged batch may span: ``replica`` (partitions sharing a replica set) or ``partition``.
    cassandra_batch_by: str = "replica"


@dataclass
class SearchConfig:
    #: ``sqlite`` (embedded default) or ``elasticsearch``.
    backend: str = "sqlite"
    path: str = str(DEFAULT_HOME / "albireo-index.sqlite")
    elasticsearch_url: str = "http://127.0.0.1:9200"
    index_name: str = "albireo-loci"
    #: this worker's durable outbox of index documents; empty = beside ``path`` (``<path>.outbox.sqlite``).
    outbox_path: str = ""


@dataclass
class FiltersConfig:
    #: built-in filter modules run in order (``filters.<name>``).
    builtin: list[str] = field(
        default_factory=lambda: ["high_snr", "fast_riser", "nearby_galaxy"]
    )
    #: per-filter time budget for one locus, seconds.
    timeout_s: float = 5.0
    #: disable a filter when this fraction of its recent runs failed (0: never); judged over
    #: the last ``error_window_runs`` runs once at least ``min_runs`` ran (a rate: a burst of odd
    #: packets cannot switch a filter off for everyone).
    max_error_rate: float = 0.5
    error_window_runs: int = 1000
    min_runs: int = 200
    #: aggregate time budget: disable a filter whose mean time per locus over that window exceeds
    #: this many seconds (0: no aggregate budget).
    max_mean_s: float = 1.0
    webhook_url: str = ""
    #: how often workers re-read the registry's enabled revisions (no restart needed), seconds.
    refresh_s: float = 30.0
    #: address-space limit of each sandboxed filter process, MiB.
    memory_mb: int = 4096
    #: size of each sandboxed filter's private /tmp (and its largest file), MiB.
    tmp_mb: int = 256
    #: shared memory for one batch's loci, MiB, written once and mapped read-only by every sandboxed
    #: filter's process (a locus past it, or every locus with 0, goes through each filter's socket).
    shared_mb: int = 128
    #: run the registry's enabled user filters (off: built-ins only).
    registry: bool = True
    #: a revision must be approved by an operator (``albireo filter approve``) before it can be
    #: enabled (off: any revision that loads may be enabled, as before the review step existed).
    require_review: bool = True


@dataclass
class CatalogConfig:
    root: str = str(DEFAULT_HOME / "catalogs")
    enabled: bool = True


@dataclass
class ServiceConfig:
    #: ``/metrics`` and ``/healthz`` of ``albireo run`` on this port (0: off) and interface.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    #: ``text`` for people, ``json`` (one object per line, with alert/locus/filter ids) for log shippers.
    log_format: str = "text"
    #: a worker whose loop shows no progress (no poll returned, no batch attempt started) for this long
    #: prints its stacks and exits 75, so that its supervisor restarts it; must exceed one batch attempt. 0: off.
    stall_timeout_s: float = 300.0
    #: TESTING ONLY: failures to inject (``point:batch=N:action``, see broker/faults.py); empty in production.
    faults: str = ""


@dataclass
class WebConfig:
    """The portal and API (``albireo serve``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: removed: writes need a per-user API key or a login session (``albireo users``); a value is refused.
    token: str = ""
    #: where the portal keeps what it owns (watch lists, submitted filters without a registry).
    data_dir: str = str(DEFAULT_HOME / "web")
    #: signs the portal's session cookies; empty = a random key made once and kept in the users database.
    secret_key: str = ""
    #: a portal login lasts this long (the key it was made with is re-checked on every request), hours.
    session_hours: float = 12.0
    #: session cookies only over HTTPS (set true behind a TLS-terminating proxy).
    secure_cookies: bool = False


@dataclass
class WatchConfig:
    """Watch-list notifications (``albireo watch notify``): where email goes out, how long a send may take."""

    #: SMTP server for watch lists that notify by email; empty = email notifications are refused.
    smtp_host: str = ""
    smtp_port: int = 25
    #: the From address of notification emails.
    smtp_from: str = "albireo@localhost"
    #: seconds a webhook POST or an SMTP conversation may take before it counts as failed (retried next run).
    timeout_s: float = 10.0
    #: a failed notification is retried on later runs up to this many attempts in all.
    max_attempts: int = 5


@dataclass
class StreamsConfig:
    """What each tagged stream is published as (the emit stage)."""

    #: per stream (tag): ``albireo`` (one Avro container file per message on ``kafka.output_prefix`` + tag),
    #: ``antares`` (ANTARES's zlib-compressed BSON on ``antares_prefix`` + tag, for antares-client),
    #: or ``both``. TOML: ``formats = {high_snr = "antares"}``; env: ``high_snr=antares,other=both``.
    formats: dict[str, str] = field(default_factory=dict)
    #: the format of a stream not named in ``formats``.
    default_format: str = "albireo"
    #: topic prefix of ANTARES-format streams; antares-client subscribes to ``client.<stream>``.
    antares_prefix: str = "client."


@dataclass
class UsersConfig:
    """Who may read which stream and write through the portal/API (``albireo users``)."""

    #: the user records (roles, hashed API keys, stream grants): a SQLite file.
    db: str = str(DEFAULT_HOME / "users.sqlite")
    #: where credentials and read grants are enforced: ``kafka`` (SCRAM/PLAIN + ACLs) or ``none`` (records only).
    stream_access: str = "kafka"
    #: the Kafka admin connection ``albireo users`` uses; empty = ``kafka.bootstrap_servers`` and ``kafka.extra``.
    admin_bootstrap: str = ""
    admin_extra: dict[str, str] = field(default_factory=dict)
    #: the broker's PLAIN credential file (PBKDF2 hashes); empty = the local broker's (``albireo services``).
    plain_credentials_file: str = ""
    #: what consumers are told to connect to; empty = the local broker's SASL_SSL listener.
    consumer_bootstrap: str = ""
    #: the CA certificate consumers verify the broker with; empty = the local broker's CA.
    ca_file: str = ""


@dataclass
class ServicesConfig:
    """The local servers ``albireo services`` fetches and runs (tests and development; not production)."""

    #: install root; empty = ``~/.cache/albireo/services``, or ``/var/cache/albireo/services`` as root.
    home: str = ""
    #: a JDK to run the servers with; empty = ``JAVA_HOME``, the ``java`` on PATH, then /usr/lib/jvm.
    java_home: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    #: the SASL_SSL listener for consumers (SCRAM-SHA-512 and PLAIN, ACLs).
    kafka_sasl_port: int = 9094
    #: the address it binds to: ``127.0.0.1`` (this host only) or ``0.0.0.0`` (every interface).
    kafka_sasl_host: str = "127.0.0.1"
    #: the host name consumers are told (and the certificate names); empty = ``kafka_sasl_host``, or this host's name.
    kafka_sasl_advertised_host: str = ""
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    elasticsearch_port: int = 9200
    elasticsearch_transport_port: int = 9300
    #: JVM heap of each server (``-Xms``/``-Xmx``), e.g. ``512m`` or ``2g``.
    kafka_heap: str = "512m"
    cassandra_heap: str = "1g"
    elasticsearch_heap: str = "512m"
    #: a starting server that shows no progress (log output, CPU time) for this long is declared stuck, seconds.
    stall_s: float = 120.0
    #: give up on a server that keeps making progress but never answers, seconds.
    max_wait_s: float = 1800.0


@dataclass
class MultimessengerConfig:
    """Neutrino and gravitational-wave notices, and their coincidences with loci (``broker.multimessenger``)."""

    #: test every alert the pipeline adds against the active localizations (the coincidence stage).
    enabled: bool = True
    #: Kafka topics of notices (GCN's names; ``albireo notices run`` consumes them).
    notice_topics: list[str] = field(default_factory=lambda: [
        "igwn.gwalert", "gcn.notices.icecube.gold_bronze_track_alerts", "gcn.notices.icecube.lvk_nu_track_search",
        "gcn.notices.km3net.alert"])
    #: consumer group of the notice workers (apart from the alert workers' group).
    group_id: str = "albireo-notices"
    #: where rejected notices go, with the schema error.
    dead_letter_topic: str = "albireo.notices.dlq"
    batch_size: int = 50
    #: alerts count for an event from this many days before its time ...
    gw_days_before: float = 1.0
    #: ... to this many days after (kilonovae fade within about two weeks).
    gw_days_after: float = 14.0
    neutrino_days_before: float = 1.0
    neutrino_days_after: float = 14.0
    #: credible levels (percent) that tag loci ``in_<messenger>_<level>`` and are drawn on event pages.
    credible_levels: list[float] = field(default_factory=lambda: [50.0, 90.0])
    #: alerts inside this credible level (percent) get the event recorded (``grav_wave_events``).
    max_contour_level: float = 90.0
    #: act on test notices (VOEvent role=test, alert_tense test, LVK mock superevents ``M…``); else store only.
    accept_test_notices: bool = False
    #: download a notice's ``healpix_url`` (else its error circle is used).
    download_skymaps: bool = True
    skymap_timeout_s: float = 30.0
    skymap_max_bytes: int = 256 * 1024 * 1024
    #: a folder of sky-map files looked into (by file name) before downloading.
    skymap_dir: str = ""
    #: notices larger than this are rejected (an LVK alert with its map is ~1 MB).
    max_notice_bytes: int = 64 * 1024 * 1024
    #: outgoing alerts (``multimessenger.outgoing``) go to ``<prefix>neutrino|optical|voevent|circular``.
    alert_topic_prefix: str = "albireo.alerts."
    #: the notice pipeline issues an event's outgoing alerts whenever a notice changes it.
    issue_alerts: bool = True


@dataclass
class ScansConfig:
    """Reconstruction scans, the SkyDriver pattern (``broker.multimessenger.scans``; ``docs/realtime.md``)."""

    #: the task and result queue: ``sqlite`` (one file, the embedded stack: workers on this machine) or ``kafka``.
    queue: str = "sqlite"
    #: the SQLite queue's file (``queue = sqlite``).
    queue_path: str = str(DEFAULT_HOME / "scan-queue.sqlite")
    #: topics ``<prefix>tasks.realtime``, ``<prefix>tasks.backfill`` (realtime is always served first), ``<prefix>results``.
    topic_prefix: str = "albireo.scans."
    #: partitions of each task topic (Kafka): at most this many workers share one lane.
    partitions: int = 8
    #: consumer group of ``albireo scan-worker`` (one per lane: ``<group>.realtime``, ``<group>.backfill``).
    group_id: str = "albireo-scan-workers"
    #: consumer group of ``albireo scan-server`` (one results topic partition: one active server).
    server_group_id: str = "albireo-scan-server"
    #: pixels per task message (a worker evaluates them in one vectorised call).
    pixels_per_task: int = 16
    #: task messages a worker takes per poll.
    batch_size: int = 8
    #: refinement: the best pixels kept at each step (beside every pixel inside the 90 % region).
    refine_best: int = 12
    #: SQLite queue: a task not committed within this many seconds is delivered again (its worker died).
    lease_s: float = 30.0
    #: the scan server sends a running step's missing pixels again after this long without progress.
    resend_after_s: float = 300.0
    max_nside: int = 1024
    #: the first step scans the whole sky: 12·nside² pixels, at most this many.
    max_first_pixels: int = 50000
    #: a refinement step scans at most this many pixels (those nearest the best pixel).
    max_step_pixels: int = 20000
    #: modules (``module`` or ``module:attr``) that register more reconstructions when imported.
    plugins: list[str] = field(default_factory=list)


@dataclass
class EventCatalogConfig:
    """The FAIR catalog of events and associations (``broker.multimessenger.catalog``, docs/catalog.md).

    Not ``[catalogs]``, which holds the cross-match catalogs loci are matched against.
    """

    #: the licence every record, export and landing page states (an SPDX id).
    license: str = "CC-BY-4.0"
    #: its URL; empty: the known URL of the SPDX id (CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0, ODbL-1.0).
    license_url: str = ""
    #: namespace of the persistent identifiers: ``<id_prefix>:event/<event>/v<n>`` ...
    id_prefix: str = "albireo"
    #: a DOI prefix (e.g. ``10.5281``): published versions are also named ``<doi_prefix>/<id_prefix>.events.v<n>``.
    doi_prefix: str = ""
    #: an ARK NAAN (e.g. ``12345``): identifiers are also given as ``ark:/<naan>/<id_prefix>/event/...``.
    ark_naan: str = ""
    title: str = "Albireo catalog of multi-messenger events and optical associations"
    creator: str = "Albireo alert broker"
    publisher: str = "Albireo"
    #: the public URL of the portal, for absolute links in metadata; empty: the URL the request came to.
    base_url: str = ""
    #: list test events (VOEvent role=test, LVK mock superevents) too; a real catalog leaves them out.
    include_test: bool = False


@dataclass
class IngestConfig:
    """Bounds on hostile packets, checked before they are decoded into memory (docs/security.md).

    Each default is about 10x the largest real ZTF/Rubin alert part, so real data never meets them.
    """

    max_message_bytes: int = 16 * 1024 * 1024
    max_schema_bytes: int = 256 * 1024
    max_schema_depth: int = 32
    max_decompressed_bytes: int = 32 * 1024 * 1024
    max_field_bytes: int = 4 * 1024 * 1024
    schema_cache_entries: int = 64
    #: a history row later than now by more than this (days) is dropped and counted.
    history_future_days: float = 1.0


@dataclass
class Config:
    association: AssociationConfig = field(default_factory=AssociationConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    catalogs: CatalogConfig = field(default_factory=CatalogConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    web: WebConfig = field(default_factory=WebConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    users: UsersConfig = field(default_factory=UsersConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    multimessenger: MultimessengerConfig = field(default_factory=MultimessengerConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    scans: ScansConfig = field(default_factory=ScansConfig)
    event_catalog: EventCatalogConfig = field(default_factory=EventCatalogConfig)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(UserError, ValueError):
    """A setting has an unknown name or a value of the wrong type."""


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if typ in (int, float, str):
            return typ(value)
        if origin is list:
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
            (item,) = getattr(typ, "__args__", (str,))
            return [item(v) for v in items] if item in (int, float, str) else items
        if origin is dict:
            if isinstance(value, str):
                return dict(kv.split("=", 1) for kv in value.split(",") if kv)
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {typ}") from exc
    return value


def _apply(section_obj: Any, section: str, values: dict[str, Any]) -> None:
    hints = get_type_hints(type(section_obj))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown setting {section}.{key}")
        setattr(section_obj, key, _coerce(f"{section}.{key}", value, hints[key]))


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the configuration: defaults, then ``path`` (TOML), then ``env`` overrides."""
    env = dict(os.environ if env is None else env)
    cfg = Config()
    path = path or env.get("ALBIREO_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
        for section, values in data.items():
            if not hasattr(cfg, section) or not isinstance(values, dict):
                raise ConfigError(f"unknown section [{section}] in {path}")
            _apply(getattr(cfg, section), section, values)
    for name, value in env.items():
        if not name.startswith("ALBIREO_") or "__" not in name:
            continue
        section, key = name[len("ALBIREO_") :].lower().split("__", 1)
        if not hasattr(cfg, section):
            raise ConfigError(f"unknown section in environment variable {name}")
        _apply(getattr(cfg, section), section, {key: value})
    validate(cfg)
    return cfg


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONSISTENCY = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")


def validate(cfg: Config) -> Config:
    """Reject values no stage can work with, naming the setting (a typo must fail at start-up)."""

    def check(ok: bool, name: str, value: Any, rule: str) -> None:
        if not ok:
            raise ConfigError(f"setting {name} = {value!r}: {rule}")

    def positive(name: str, value: float) -> None:
        check(value > 0, name, value, "must be a number > 0")  # NaN fails too

    def port(name: str, value: int, allow_zero: bool = True) -> None:
        check((0 if allow_zero else 1) <= value <= 65535, name, value,
              "must be a port number (1-65535" + (", or 0)" if allow_zero else ")"))

    port("watch.smtp_port", cfg.watch.smtp_port, allow_zero=False)
    positive("watch.timeout_s", cfg.watch.timeout_s)
    check(cfg.watch.max_attempts >= 1, "watch.max_attempts", cfg.watch.max_attempts, "must be at least 1")
    r = cfg.association.radius_arcsec
    check(0 < r <= 60, "association.radius_arcsec", r, "must be > 0 and at most 60 arcsec")
    o = cfg.association.object_radius_arcsec
    check(0 <= o <= 2 * r, "association.object_radius_arcsec", o, "must be between 0 and 2 × association.radius_arcsec")
    k = cfg.kafka
    check(k.batch_size >= 1, "kafka.batch_size", k.batch_size, "must be at least 1")
    positive("kafka.poll_timeout_s", k.poll_timeout_s)
    check(0 <= k.batch_linger_s <= k.poll_timeout_s, "kafka.batch_linger_s", k.batch_linger_s,
          "must be between 0 and kafka.poll_timeout_s")
    check(1000 <= k.transaction_timeout_ms <= 900_000, "kafka.transaction_timeout_ms", k.transaction_timeout_ms,
          "must be between 1000 and 900000 (the broker's transaction.max.timeout.ms)")
    check(bool(k.input_topics), "kafka.input_topics", k.input_topics, "must name at least one topic")
    check(not (k.schemaless_lsst_version and k.schemaless_ztf_version), "kafka.schemaless_ztf_version",
          k.schemaless_ztf_version, "a schemaless body has one writer schema: unset kafka.schemaless_lsst_version")
    if k.schemaless_ztf_version:
        from broker.ingest.surveys.ztf import schema_versions

        check(k.schemaless_ztf_version in schema_versions(), "kafka.schemaless_ztf_version", k.schemaless_ztf_version,
              f"must be a ZTF schema shipped in schemas/ztf ({', '.join(schema_versions())})")
    check(cfg.store.backend in ("sqlite", "cassandra"), "store.backend", cfg.store.backend,
          "must be 'sqlite' or 'cassandra'")
    check(cfg.store.consistency.upper() in _CONSISTENCY, "store.consistency", cfg.store.consistency,
          f"must be one of {', '.join(_CONSISTENCY)}")
    port("store.cassandra_port", cfg.store.cassandra_port, allow_zero=False)
    check(1 <= cfg.store.cassandra_max_in_flight <= 32768, "store.cassandra_max_in_flight",
          cfg.store.cassandra_max_in_flight, "must be between 1 and 32768 (the driver's streams per connection)")
    check(cfg.store.cassandra_batch_by in ("replica", "partition"), "store.cassandra_batch_by",
          cfg.store.cassandra_batch_by, "must be 'replica' or 'partition'")
    check(cfg.search.backend in ("sqlite", "elasticsearch"), "search.backend", cfg.search.backend,
          "must be 'sqlite' or 'elasticsearch'")
    f = cfg.filters
    positive("filters.timeout_s", f.timeout_s)
    check(0 <= f.max_error_rate <= 1, "filters.max_error_rate", f.max_error_rate,
          "must be a fraction between 0 (never disable) and 1")
    check(f.error_window_runs >= 1, "filters.error_window_runs", f.error_window_runs, "must be at least 1")
    check(1 <= f.min_runs <= f.error_window_runs, "filters.min_runs", f.min_runs,
          "must be at least 1 and at most filters.error_window_runs")
    check(f.max_mean_s == 0 or 0 < f.max_mean_s <= f.timeout_s, "filters.max_mean_s", f.max_mean_s,
          "must be 0 (no aggregate budget) or > 0 and at most filters.timeout_s")
    check(f.refresh_s >= 0, "filters.refresh_s", f.refresh_s, "must be >= 0")
    check(f.memory_mb == 0 or f.memory_mb >= 64, "filters.memory_mb", f.memory_mb, "must be 0 (no limit) or >= 64")
    check(1 <= f.tmp_mb <= 65536, "filters.tmp_mb", f.tmp_mb, "must be between 1 and 65536 MiB")
    check(0 <= f.shared_mb <= 65536, "filters.shared_mb", f.shared_mb, "must be between 0 (off) and 65536 MiB")
    port("service.metrics_port", cfg.service.metrics_port)
    check(cfg.service.log_level.upper() in _LOG_LEVELS, "service.log_level", cfg.service.log_level,
          f"must be one of {', '.join(_LOG_LEVELS)}")
    st_s = cfg.service.stall_timeout_s
    check(st_s == 0 or st_s >= max(30.0, 10 * k.poll_timeout_s), "service.stall_timeout_s", st_s,
          "must be 0 (off) or at least 30 s and 10 × kafka.poll_timeout_s (an idle poll is progress too)")
    check(cfg.service.log_format in ("text", "json"), "service.log_format", cfg.service.log_format,
          "must be 'text' or 'json'")
    try:
        from broker.faults import FaultPlan

        FaultPlan.parse(cfg.service.faults)
    except ValueError as exc:
        raise ConfigError(f"setting service.faults: {exc}") from None
    port("web.port", cfg.web.port)
    check(not cfg.web.token, "web.token", "***", "the shared write token was replaced by per-user API keys: "
          "remove it and create a key with `albireo users add NAME --role admin` (docs/portal-api.md)")
    positive("web.session_hours", cfg.web.session_hours)
    st = cfg.streams
    formats = ("albireo", "antares", "both")
    check(st.default_format in formats, "streams.default_format", st.default_format, f"must be one of {formats}")
    for stream, fmt in st.formats.items():
        check(fmt in formats, f"streams.formats.{stream}", fmt, f"must be one of {formats}")
    check(bool(st.antares_prefix) and st.antares_prefix != cfg.kafka.output_prefix, "streams.antares_prefix",
          st.antares_prefix, "must be non-empty and differ from kafka.output_prefix")
    check(cfg.users.stream_access in ("kafka", "none"), "users.stream_access", cfg.users.stream_access,
          "must be 'kafka' or 'none'")
    sv = cfg.services
    for name in ("kafka_port", "kafka_controller_port", "kafka_sasl_port", "cassandra_port", "cassandra_storage_port",
                 "elasticsearch_port", "elasticsearch_transport_port"):
        port(f"services.{name}", getattr(sv, name), allow_zero=False)
    positive("services.stall_s", sv.stall_s)
    positive("services.max_wait_s", sv.max_wait_s)
    mm = cfg.multimessenger
    check(bool(mm.notice_topics), "multimessenger.notice_topics", mm.notice_topics, "must name at least one topic")
    check(mm.batch_size >= 1, "multimessenger.batch_size", mm.batch_size, "must be at least 1")
    for name in ("gw_days_before", "gw_days_after", "neutrino_days_before", "neutrino_days_after"):
        v = getattr(mm, name)
        check(0 <= v <= 3650, f"multimessenger.{name}", v, "must be a number of days in [0, 3650]")
    check(bool(mm.credible_levels) and all(0 < lv < 100 for lv in mm.credible_levels),
          "multimessenger.credible_levels", mm.credible_levels, "must be percentages in (0, 100)")
    check(0 < mm.max_contour_level < 100, "multimessenger.max_contour_level", mm.max_contour_level,
          "must be a percentage in (0, 100)")
    ec = cfg.event_catalog
    check(bool(re.fullmatch(r"[a-z][a-z0-9.-]{0,31}", ec.id_prefix)), "event_catalog.id_prefix", ec.id_prefix,
          "must be a lower-case name (letters, digits, '.', '-'), starting with a letter")
    check(not ec.doi_prefix or bool(re.fullmatch(r"10\.\d{4,9}", ec.doi_prefix)), "event_catalog.doi_prefix",
          ec.doi_prefix, "must be empty or a DOI prefix such as 10.5281")
    check(not ec.ark_naan or ec.ark_naan.isdigit(), "event_catalog.ark_naan", ec.ark_naan,
          "must be empty or a numeric ARK NAAN")
    from broker.multimessenger.catalog.identifiers import license_url

    check(bool(ec.license) and bool(ec.license_url or license_url(ec.license)), "event_catalog.license",
          ec.license, "must be an SPDX id; give event_catalog.license_url for one other than CC-BY-4.0, "
          "CC-BY-SA-4.0, CC0-1.0, ODbL-1.0")
    positive("multimessenger.skymap_timeout_s", mm.skymap_timeout_s)
    check(mm.skymap_max_bytes >= 1024, "multimessenger.skymap_max_bytes", mm.skymap_max_bytes, "must be >= 1024")
    check(mm.max_notice_bytes >= 1024, "multimessenger.max_notice_bytes", mm.max_notice_bytes, "must be >= 1024")
    check(bool(re.fullmatch(r"[A-Za-z0-9._-]{1,200}", mm.alert_topic_prefix)), "multimessenger.alert_topic_prefix",
          mm.alert_topic_prefix, "must be a Kafka topic prefix (letters, digits, '.', '_', '-')")
    ig = cfg.ingest
    for name in ("max_message_bytes", "max_schema_bytes", "max_decompressed_bytes", "max_field_bytes"):
        check(getattr(ig, name) >= 1024, f"ingest.{name}", getattr(ig, name), "must be >= 1024 bytes")
    check(4 <= ig.max_schema_depth <= 200, "ingest.max_schema_depth", ig.max_schema_depth,
          "must be between 4 and 200 (deeper overflows the decoder's C stack)")
    check(ig.schema_cache_entries >= 1, "ingest.schema_cache_entries", ig.schema_cache_entries, "must be at least 1")
    check(0 <= ig.history_future_days <= 365, "ingest.history_future_days", ig.history_future_days,
          "must be a number of days in [0, 365]")
    return cfg


def to_toml(cfg: Config) -> str:
    """Render the effective configuration as TOML (``albireo config show``)."""
    import tomli_w

    return tomli_w.dumps(cfg.as_dict())
