"""Counters, gauges and latency histograms for every stage, exposed by prometheus-client.

A worker (or the portal) keeps one :class:`Metrics`; stages call :meth:`Metrics.inc`,
:meth:`Metrics.observe` and :meth:`Metrics.time` by *name* and labels, and ``/metrics``
(``albireo run`` with ``service.metrics_port``, ``albireo serve``) serves :meth:`Metrics.render`.

Why a thin wrapper over prometheus-client rather than its objects everywhere: stages stay free of
a client library (they receive a ``Metrics``), a metric is declared by its first use (its label
names fixed then, as Prometheus requires), and each worker or test gets its own registry, so
counts never leak between pipelines in one process.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: histogram bucket upper bounds, seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: HELP text of the metrics the pipeline, the worker and the portal emit (others get a generic one).
DESCRIPTIONS = {
    "messages": "Input messages read",
    "alerts_ingested": "New alert rows stored (trigger and history)",
    "loci_created": "Loci founded",
    "loci_updated": "Existing loci that received alerts",
    "duplicates": "Packets skipped because their trigger was already stored (replays)",
    "rejected": "Input messages rejected, by reason",
    "dead_letters": "Messages sent to the dead-letter stream, by reason",
    "dead_letters_stored": "Dead letters new to the store (a replayed bad message is stored once)",
    "empty_messages": "Container messages without any record (skipped)",
    "published": "Tagged locus messages published, by stream",
    "crossmatched": "Loci matched against the current catalog set",
    "filter_errors": "Filter runs that failed (all filters)",
    "filter_errors_by_filter": "Filter runs that failed, by filter and exception",
    "filter_seconds": "Time of one filter run on one locus",
    "batch_retries": "Pipeline batches retried after an error",
    "stage_seconds": "Time per pipeline stage and batch",
    "consumer_lag": "Messages behind the end of each assigned input partition",
    "sandbox_respawns": "Sandbox child processes replaced after a crash or hang",
    "http_requests": "Portal and API requests, by endpoint, method and status",
    "http_request_seconds": "Portal and API request latency, by endpoint",
}


class Metrics:
    """One Prometheus registry with name-based helpers (thread-safe)."""

    def __init__(self, prefix: str = "albireo_", registry: CollectorRegistry | None = None):
        self.prefix = prefix
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._families: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._stage_totals: dict[str, float] = defaultdict(float)

    def _family(self, kind: type, name: str, labels: dict[str, Any]) -> Any:
        labelnames = tuple(sorted(labels))
        hit = self._families.get(name)
        if hit is None:
            with self._lock:
                hit = self._families.get(name)
                if hit is None:
                    extra = {"buckets": BUCKETS} if kind is Histogram else {}
                    fam = kind(self.prefix + name, DESCRIPTIONS.get(name, f"Albireo {name.replace('_', ' ')}"),
                               labelnames, registry=self.registry, **extra)
                    hit = self._families[name] = (fam, labelnames)
        fam, known = hit
        if known != labelnames or not isinstance(fam, kind):
            raise ValueError(f"metric {name!r} was declared as {type(fam).__name__}{list(known)}, "
                             f"now used as {kind.__name__}{list(labelnames)}")
        return fam.labels(**{k: str(v) for k, v in labels.items()}) if labelnames else fam

    def declare(self, kind: str, name: str, *labelnames: str) -> None:
        """Create a metric before its first event, so dashboards and alerts see it (at 0) from the start."""
        cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
        with self._lock:
            if name in self._families:
                return
            extra = {"buckets": BUCKETS} if cls is Histogram else {}
            fam = cls(self.prefix + name, DESCRIPTIONS.get(name, f"Albireo {name.replace('_', ' ')}"),
                      tuple(sorted(labelnames)), registry=self.registry, **extra)
            self._families[name] = (fam, tuple(sorted(labelnames)))

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        """Add ``value`` to the counter ``<prefix><name>_total``."""
        if value:
            self._family(Counter, name, labels).inc(value)
        else:
            self._family(Counter, name, labels)  # declared, so it shows (at 0) before the first event

    def set(self, name: str, value: float, **labels: Any) -> None:
        """Set the gauge ``<prefix><name>``."""
        self._family(Gauge, name, labels).set(value)

    def observe(self, name: str, seconds: float, **labels: Any) -> None:
        """Record one duration in the histogram ``<prefix><name>``."""
        self._family(Histogram, name, labels).observe(seconds)
        if name == "stage_seconds":
            with self._lock:
                self._stage_totals[str(labels.get("stage"))] += seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Time a pipeline stage into ``stage_seconds{stage=...}``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe("stage_seconds", time.perf_counter() - t0, stage=stage)

    def counter(self, name: str, **labels: Any) -> float:
        """The current value of a counter (0 when never incremented)."""
        value = self.registry.get_sample_value(f"{self.prefix}{name}_total", {k: str(v) for k, v in labels.items()})
        return float(value or 0.0)

    def gauge(self, name: str, **labels: Any) -> float | None:
        """The current value of a gauge (None when never set)."""
        return self.registry.get_sample_value(f"{self.prefix}{name}", {k: str(v) for k, v in labels.items()})

    def stage_totals(self) -> dict[str, float]:
        """Total seconds spent per stage (for summaries), in the order stages first ran."""
        with self._lock:
            return dict(self._stage_totals)

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry).decode()
