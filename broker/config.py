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
    #: Produce outputs and commit input offsets in one Kafka transaction.
    transactional: bool = False
    #: Confluent schema registry for Confluent-framed input; empty = the Rubin schemas of lsst-alert-packet.
    schema_registry_url: str = ""
    #: writer schema version (e.g. "7.1") of *schemaless* Rubin payloads; empty = none expected.
    schemaless_lsst_version: str = ""
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
    #: disable a filter after this many errors within ``error_window_s``.
    max_errors: int = 50
    error_window_s: float = 600.0
    webhook_url: str = ""
    #: how often workers re-read the registry's enabled revisions (no restart needed), seconds.
    refresh_s: float = 30.0
    #: address-space limit of each sandboxed filter process, MiB.
    memory_mb: int = 4096
    #: sandbox child processes running user filters.
    sandbox_processes: int = 1
    #: run the registry's enabled user filters (off: built-ins only).
    registry: bool = True


@dataclass
class CatalogConfig:
    root: str = str(DEFAULT_HOME / "catalogs")
    enabled: bool = True


@dataclass
class ServiceConfig:
    metrics_port: int = 0
    log_level: str = "INFO"


@dataclass
class WebConfig:
    """The portal and API (``albireo serve``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: bearer token for writes (filter submission, watch lists); empty disables writes.
    token: str = ""
    #: where the portal keeps what it owns (watch lists, submitted filters without a registry).
    data_dir: str = str(DEFAULT_HOME / "web")


@dataclass
class ServicesConfig:
    """The local servers ``albireo services`` fetches and runs (tests and development; not production)."""

    #: install root; empty = ``~/.cache/albireo/services``, or ``/var/cache/albireo/services`` as root.
    home: str = ""
    #: a JDK to run the servers with; empty = ``JAVA_HOME``, the ``java`` on PATH, then /usr/lib/jvm.
    java_home: str = ""
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    elasticsearch_port: int = 9200
    elasticsearch_transport_port: int = 9300
    #: JVM heap of each server (``-Xms``/``-Xmx``), e.g. ``512m`` or ``2g``.
    kafka_heap: str = "512m"
    cassandra_heap: str = "512m"
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
    services: ServicesConfig = field(default_factory=ServicesConfig)
    multimessenger: MultimessengerConfig = field(default_factory=MultimessengerConfig)

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

    r = cfg.association.radius_arcsec
    check(0 < r <= 60, "association.radius_arcsec", r, "must be > 0 and at most 60 arcsec")
    k = cfg.kafka
    check(k.batch_size >= 1, "kafka.batch_size", k.batch_size, "must be at least 1")
    positive("kafka.poll_timeout_s", k.poll_timeout_s)
    check(bool(k.input_topics), "kafka.input_topics", k.input_topics, "must name at least one topic")
    check(cfg.store.backend in ("sqlite", "cassandra"), "store.backend", cfg.store.backend,
          "must be 'sqlite' or 'cassandra'")
    check(cfg.store.consistency.upper() in _CONSISTENCY, "store.consistency", cfg.store.consistency,
          f"must be one of {', '.join(_CONSISTENCY)}")
    port("store.cassandra_port", cfg.store.cassandra_port, allow_zero=False)
    check(cfg.search.backend in ("sqlite", "elasticsearch"), "search.backend", cfg.search.backend,
          "must be 'sqlite' or 'elasticsearch'")
    f = cfg.filters
    positive("filters.timeout_s", f.timeout_s)
    check(f.max_errors >= 0, "filters.max_errors", f.max_errors, "must be >= 0 (0: never disable)")
    positive("filters.error_window_s", f.error_window_s)
    check(f.refresh_s >= 0, "filters.refresh_s", f.refresh_s, "must be >= 0")
    check(f.memory_mb == 0 or f.memory_mb >= 64, "filters.memory_mb", f.memory_mb, "must be 0 (no limit) or >= 64")
    check(f.sandbox_processes >= 1, "filters.sandbox_processes", f.sandbox_processes, "must be at least 1")
    port("service.metrics_port", cfg.service.metrics_port)
    check(cfg.service.log_level.upper() in _LOG_LEVELS, "service.log_level", cfg.service.log_level,
          f"must be one of {', '.join(_LOG_LEVELS)}")
    port("web.port", cfg.web.port)
    sv = cfg.services
    for name in ("kafka_port", "kafka_controller_port", "cassandra_port", "cassandra_storage_port",
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
    positive("multimessenger.skymap_timeout_s", mm.skymap_timeout_s)
    check(mm.skymap_max_bytes >= 1024, "multimessenger.skymap_max_bytes", mm.skymap_max_bytes, "must be >= 1024")
    check(mm.max_notice_bytes >= 1024, "multimessenger.max_notice_bytes", mm.max_notice_bytes, "must be >= 1024")
    return cfg


def to_toml(cfg: Config) -> str:
    """Render the effective configuration as TOML (``albireo config show``)."""
    import tomli_w

    return tomli_w.dumps(cfg.as_dict())
