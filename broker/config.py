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
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
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
    return cfg


def to_toml(cfg: Config) -> str:
    """Render the effective configuration as TOML (``albireo config show``)."""
    import tomli_w

    return tomli_w.dumps(cfg.as_dict())
