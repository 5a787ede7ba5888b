"""The worker loop: poll a batch, run the pipeline, acknowledge, commit; never drop a batch.

One worker is one member of the Kafka consumer group (or one embedded run over
files). Scaling out is starting more workers with the same ``group_id``: Kafka
spreads the input partitions between them.

Failures of the *infrastructure* (Kafka not acknowledging, the store or index
unreachable) are retried with exponential back-off on the same batch, whose
offsets stay uncommitted: nothing is lost, and the idempotent writes make the
retry harmless. Failures of the *data* never reach this loop: the pipeline turns
them into dead letters.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.association import Associator
from broker.config import Config
from broker.filters import FilterRunner, LoadedFilter, load_builtin_filters
from broker.metrics import Metrics
from broker.pipeline import BatchResult, Pipeline
from broker.streams.base import Sink, Source

log = logging.getLogger("albireo.worker")


@dataclass
class RunSummary:
    result: BatchResult = field(default_factory=BatchResult)
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def alerts_per_s(self) -> float:
        return self.result.packets / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        r = self.result
        lines = [
            f"messages read      {r.messages}",
            f"packets accepted   {r.packets}  (alerts stored: {r.alerts_new}, incl. history)",
            f"duplicates skipped {r.duplicates}",
            f"rejected           {r.rejected_total}"
            + ("".join(f"\n  - {reason}: {n}" for reason, n in sorted(r.rejected.items())) if r.rejected else ""),
            f"loci created       {r.loci_created}",
            f"loci updated       {r.loci_updated}",
            f"loci cross-matched {r.crossmatched}",
            f"filter errors      {r.filter_errors}",
            "tags per stream    " + (", ".join(f"{t}={n}" for t, n in sorted(r.tags.items())) or "(none)"),
            f"throughput         {self.alerts_per_s:,.0f} packets/s over {self.seconds:.2f}s "
            f"({self.batches} batches)",
        ]
        if self.stage_seconds:
            total = sum(self.stage_seconds.values()) or 1.0
            lines.append(
                "time per stage     "
                + ", ".join(f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in self.stage_seconds.items())
            )
        return "\n".join(lines)


class Worker:
    def __init__(self, pipeline: Pipeline, source: Source, batch_size: int = 500, poll_timeout_s: float = 1.0,
                 transactional_sink: Any = None):
        self.pipeline = pipeline
        self.source = source
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.transactional_sink = transactional_sink
        self._stop = False

    def stop(self, *_: Any) -> None:
        """Finish the current batch, commit it and return (SIGTERM/SIGINT handler)."""
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, max_messages: int | None = None, idle_timeout_s: float | None = None,
            max_backoff_s: float = 30.0) -> RunSummary:
        """Process until the source is exhausted, ``max_messages`` were read, idle too long, or stopped."""
        summary = RunSummary()
        t_start = time.perf_counter()
        last_data = time.monotonic()
        while not self._stop:
            want = self.batch_size
            if max_messages is not None:
                want = min(want, max_messages - summary.result.messages)
                if want <= 0:
                    break
            batch = self.source.poll_batch(want, self.poll_timeout_s)
            if not self.source.ready:
                last_data = time.monotonic()
            if not batch:
                if self.source.exhausted:
                    break
                if idle_timeout_s is not None and time.monotonic() - last_data > idle_timeout_s:
                    break
                continue
            last_data = time.monotonic()
            res = self._process_with_retry(batch, summary, max_backoff_s)
            summary.result.add(res)
            summary.batches += 1
        summary.seconds = time.perf_counter() - t_start
        summary.stage_seconds = self.pipeline.metrics.stage_totals()
        return summary

    def _process_with_retry(self, batch, summary: RunSummary, max_backoff_s: float) -> BatchResult:
        """Process and commit ``batch``; infrastructure errors are retried forever with back-off.

        Any other exception is a bug met by some message: after one retry the batch
        is split in halves, down to the single message that fails, which is
        dead-lettered with its traceback so the stream keeps flowing.
        """
        delay = 0.5
        attempts = 0
        while True:
            try:
                res = self.pipeline.process(batch)
                self._commit(batch)
                return res
            except Exception as exc:
                self._abort()
                summary.retries += 1
                self.pipeline.metrics.inc("batch_retries")
                attempts += 1
                transient = is_transient(exc)
                log.error("batch of %d failed (%s: %s)%s", len(batch), type(exc).__name__, exc,
                          f"; retrying in {delay:.1f}s" if transient else "")
                if self._stop:
                    raise
                if transient:
                    time.sleep(delay)
                    delay = min(delay * 2, max_backoff_s)
                    continue
                if attempts < 2:
                    continue
                if len(batch) == 1:
                    res = self.pipeline.dead_letter(batch, "internal_error", f"{type(exc).__name__}: {exc}\n"
                                                    + traceback.format_exc())
                    self._commit(batch)
                    return res
                half = len(batch) // 2
                res = self._process_with_retry(batch[:half], summary, max_backoff_s)
                res.add(self._process_with_retry(batch[half:], summary, max_backoff_s))
                return res

    def _commit(self, batch) -> None:
        if self.transactional_sink is not None:
            self.transactional_sink.commit_transaction(self.source, batch)
        else:
            self.source.commit(batch)

    def _abort(self) -> None:
        if self.transactional_sink is not None:
            try:
                self.transactional_sink.abort()
            except Exception as abort_exc:
                log.error("aborting the transaction failed: %s", abort_exc)


_TRANSIENT_MODULES = ("cassandra", "elasticsearch", "elastic_transport", "confluent_kafka", "urllib3", "requests")


def is_transient(exc: BaseException) -> bool:
    """True for errors of the infrastructure (retry the batch), False for bugs met by the data."""
    from broker.streams.base import DeliveryError

    if isinstance(exc, (DeliveryError, OSError, TimeoutError, ConnectionError, sqlite3.OperationalError)):
        return True
    return any(type(e).__module__.split(".")[0] in _TRANSIENT_MODULES for e in _chain(exc))


def _chain(exc: BaseException):
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


# ---- assembling a worker from configuration -------------------------------------------------
def build_filters(cfg: Config, extra: list[LoadedFilter] | None = None, store: Any = None) -> Any:
    """Built-ins in process plus the registry's enabled revisions in the sandbox pool.

    The registry is read from ``store`` (default: the configured store, opened on the
    first refresh) every ``filters.refresh_s`` seconds, so enabling a filter needs no
    restart. Errors go to ``filters.webhook_url`` when set; automatic disables are
    written back to the registry so that every worker and the portal see them.
    """
    from broker.filter_registry import enabled_specs, set_status
    from broker.filters import ErrorPolicy
    from broker.sandbox import PlatformRunner, SandboxLimits

    f = cfg.filters
    loaded = load_builtin_filters(f.builtin) + list(extra or [])
    holder: dict[str, Any] = {"store": store}

    def registry_store():
        if holder["store"] is None:
            holder["store"] = build_store(cfg, Associator(cfg.association.radius_arcsec))
        return holder["store"]

    def revisions():
        if holder["store"] is None and cfg.store.backend == "sqlite" and not Path(cfg.store.path).exists():
            return []  # no store yet, so no registry: do not create one as a side effect
        s = registry_store()
        return enabled_specs(s) if hasattr(s, "list_filter_revisions") else []

    notifier = None
    if f.webhook_url:
        from broker.notify import WebhookNotifier

        notifier = WebhookNotifier(f.webhook_url)

    def on_disable(lf: LoadedFilter, err) -> None:
        if notifier is not None:
            notifier.on_disable(lf, err)
        if lf.isolation == "sandbox":
            try:
                set_status(registry_store(), lf.name, "disabled", lf.revision, reason=lf.disabled_reason)
            except Exception as exc:  # the registry being down must not stop the stream
                log.error("could not record that filter %s was disabled: %s", lf.name, exc)

    policy = ErrorPolicy(f.max_errors, f.error_window_s, on_disable=on_disable,
                         on_error=notifier.on_error if notifier is not None else None)
    limits = SandboxLimits.from_config(f, processes=f.sandbox_processes)
    return PlatformRunner(loaded, revisions=revisions if f.registry else None, limits=limits, policy=policy,
                          refresh_s=f.refresh_s, slow_s=f.timeout_s)


def build_catalogs(cfg: Config) -> Any:
    """The enabled catalog set (OpenNGC built on first use), or None when cross-matching is off."""
    if not cfg.catalogs.enabled:
        return None
    from broker.crossmatch import CatalogSet, ensure_default_catalogs

    Path(cfg.catalogs.root).mkdir(parents=True, exist_ok=True)
    ensure_default_catalogs(cfg.catalogs.root)
    return CatalogSet.open(cfg.catalogs.root)


def build_store(cfg: Config, associator: Associator):
    if cfg.store.backend == "sqlite":
        from broker.storage.sqlite import SQLiteStore

        return SQLiteStore(cfg.store.path, associator.order)
    from broker.storage import open_store

    return open_store(cfg.store, associator.order)


def build_pipeline(cfg: Config, store, sink: Sink, index_writer: Any = None, catalogs: Any = None,
                   filters: FilterRunner | None = None, metrics: Metrics | None = None,
                   associator: Associator | None = None) -> Pipeline:
    associator = associator or Associator(cfg.association.radius_arcsec)
    return Pipeline(
        store=store,
        sink=sink,
        filters=filters or build_filters(cfg, store=store),
        associator=associator,
        output_prefix=cfg.kafka.output_prefix,
        dead_letter_topic=cfg.kafka.dead_letter_topic,
        index_writer=index_writer,
        catalogs=catalogs,
        metrics=metrics,
        lsst_schema_version=cfg.kafka.schemaless_lsst_version,
        schema_registry=_registry(cfg),
    )


def _registry(cfg: Config) -> Any:
    """A Confluent schema-registry client when one is configured (else the local Rubin schemas)."""
    if not cfg.kafka.schema_registry_url:
        return None
    from broker.avro import ConfluentRegistryClient

    return ConfluentRegistryClient(cfg.kafka.schema_registry_url)
