"""The in-process filter runner and the bookkeeping every runner shares.

Filters are guests: the runner checks constraints, times each call (counters and a latency
histogram per filter), catches every exception with its traceback, attributes each tag and
property to the filter revision that set it, and disables a filter that keeps failing
(:class:`ErrorPolicy`). :class:`InProcessRunner` runs trusted filters (the built-ins) in this
process; :mod:`broker.filtering.sandbox` hosts user filters in child processes and runs this same
runner there.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import logging
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import broker
from broker.filtering.contract import find_filter_classes, satisfies_constraints, source_hash
from broker.locus import Locus, Provenance
from broker.metrics import BUCKETS, Metrics

log = logging.getLogger("albireo.filters")


# ---- bookkeeping ----------------------------------------------------------------------------
@dataclass
class FilterError:
    filter: str
    revision: str
    locus_id: str
    alert_id: str
    exception: str
    message: str
    traceback: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class FilterTimeout(Exception):
    """Raised inside a filter call that exceeded its time budget."""


@dataclass
class FilterStats:
    """Per-filter counters and a latency histogram (``BUCKETS`` seconds); ``latencies`` keeps recent runs."""

    runs: int = 0
    skipped: int = 0
    errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    tagged: int = 0
    total_s: float = 0.0
    slow: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=2048))
    histogram: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def observe(self, dt: float) -> None:
        self.runs += 1
        self.total_s += dt
        self.latencies.append(dt)
        self.histogram[bisect.bisect_left(BUCKETS, dt)] += 1

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "skipped": self.skipped, "errors": self.errors, "timeouts": self.timeouts,
            "crashes": self.crashes, "tagged": self.tagged, "total_s": self.total_s, "slow": self.slow,
            "p50_s": self.percentile(0.5), "p99_s": self.percentile(0.99),
            "histogram": dict(zip([*map(str, BUCKETS), "+Inf"], self.histogram, strict=True)),
        }


@dataclass
class LoadedFilter:
    """A filter with its name, revision and runtime state.

    ``instance`` is None for a filter hosted by the sandbox pool: the parent keeps only its bookkeeping.
    ``isolation`` is ``"inprocess"`` (trusted built-ins) or ``"sandbox"`` (user code).
    """

    name: str
    revision: str
    instance: Any
    priority: int = 0
    enabled: bool = True
    disabled_reason: str = ""
    stats: FilterStats = field(default_factory=FilterStats)
    recent_errors: deque = field(default_factory=lambda: deque(maxlen=1000))
    isolation: str = "inprocess"
    code: str = ""
    output_locus_tags: list = field(default_factory=list)
    #: failed runs (errors, timeouts, crashes) since the last run that did not fail.
    consecutive_failures: int = 0

    @property
    def output_tags(self) -> list[str]:
        tags = self.output_locus_tags or getattr(self.instance, "OUTPUT_LOCUS_TAGS", [])
        return [t["name"] if isinstance(t, dict) else str(t) for t in tags]


def load_filter_class(cls: type, name: str | None = None, priority: int = 0) -> LoadedFilter:
    return LoadedFilter(name=name or cls.__name__, revision=source_hash(cls), instance=cls(), priority=priority)


def load_builtin_filters(names: list[str]) -> list[LoadedFilter]:
    """Built-in filters by module name under ``filters/``, in the given priority order."""
    loaded = []
    for prio, name in enumerate(names):
        module = importlib.import_module(f"filters.{name}")
        for cls in find_filter_classes(module):
            loaded.append(load_filter_class(cls, name=name, priority=prio))
    return loaded


@dataclass
class RunReport:
    """What one batch of filter runs did: per locus, the tags set during this run."""

    tags_by_locus: dict[str, set[str]] = field(default_factory=dict)
    errors: list[FilterError] = field(default_factory=list)
    runs: int = 0
    skipped: int = 0

    def merge(self, other: RunReport) -> None:
        for lid, tags in other.tags_by_locus.items():
            self.tags_by_locus.setdefault(lid, set()).update(tags)
        self.errors.extend(other.errors)
        self.runs += other.runs
        self.skipped += other.skipped


class ErrorPolicy:
    """Records filter errors and disables a filter after ``max_errors`` within ``error_window_s``.

    ``max_consecutive`` (off by default) also stops a filter after that many failed runs in a row
    (errors, timeouts, crashes): what ``albireo filter test`` uses, so that a filter that hangs
    costs a few budgets, not one per locus. Shared by the in-process runner and the sandbox pool
    so both count alike; ``on_error`` and ``on_disable`` hooks feed notifications (see
    :mod:`broker.filtering.notify`).
    """

    def __init__(self, max_errors: int = 50, error_window_s: float = 600.0, on_disable=None, on_error=None,
                 metrics: Metrics | None = None, max_consecutive: int = 0):
        self.max_errors = max_errors
        self.error_window_s = error_window_s
        self.on_disable = on_disable
        self.on_error = on_error
        self.metrics = metrics
        self.max_consecutive = max_consecutive

    @staticmethod
    def succeeded(f: LoadedFilter) -> None:
        """A run that did not fail: the run of consecutive failures is broken."""
        f.consecutive_failures = 0

    def record(self, f: LoadedFilter, err: FilterError, report: RunReport) -> None:
        f.stats.errors += 1
        f.recent_errors.append(err)
        report.errors.append(err)
        if self.metrics is not None:
            self.metrics.inc("filter_errors_by_filter", filter=f.name, exception=err.exception)
        log.warning("filter %s@%s raised %s on locus %s (alert %s): %s",
                    f.name, f.revision, err.exception, err.locus_id, err.alert_id, err.message,
                    extra={"filter": f.name, "revision": f.revision, "locus_id": err.locus_id,
                           "alert_id": err.alert_id})
        if self.on_error:
            self._safely(self.on_error, f, err)
        f.consecutive_failures += 1
        now = err.at
        recent = sum(1 for e in f.recent_errors if now - e.at <= self.error_window_s)
        reason = None
        if self.max_consecutive and f.consecutive_failures >= self.max_consecutive:
            reason = f"stopped after {f.consecutive_failures} failed runs in a row"
        elif self.max_errors and recent >= self.max_errors:
            reason = f"{recent} errors within {self.error_window_s:.0f}s"
        if reason and f.enabled:
            f.enabled = False
            f.disabled_reason = f"{reason}; last: {err.exception}: {err.message}"
            log.error("filter %s disabled: %s", f.name, f.disabled_reason,
                      extra={"filter": f.name, "revision": f.revision})
            if self.on_disable:
                self._safely(self.on_disable, f, err)

    @staticmethod
    def _safely(hook, f: LoadedFilter, err: FilterError) -> None:
        try:
            hook(f, err)
        except Exception:  # a failing notification hook must not stop the stream; say so
            log.exception("filter hook %r failed for %s", hook, f.name)


def make_error(f: LoadedFilter, locus: Locus, exc_type: str, message: str, tb: str) -> FilterError:
    return FilterError(filter=f.name, revision=f.revision, locus_id=locus.locus_id,
                       alert_id=locus.alert.id if locus.alerts else "", exception=exc_type, message=message,
                       traceback=tb, at=time.time())


@contextlib.contextmanager
def time_budget(seconds: float | None):
    """Raise :class:`FilterTimeout` in the running code after ``seconds`` (main thread only, via SIGALRM).

    Interrupts Python code (loops, sleeps); a call stuck inside C code is
    stopped by the sandbox parent killing the process instead.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum, frame):
        raise FilterTimeout(f"exceeded its time budget of {seconds:g}s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def export_filter_metrics(filters: list[LoadedFilter], metrics: Metrics) -> None:
    """Per-filter gauges (runs, skipped, errors, timeouts, crashes, tagged, enabled, seconds) for ``/metrics``."""
    for f in filters:
        st = f.stats
        for name, value in (("runs", st.runs), ("skipped", st.skipped), ("errors", st.errors),
                            ("timeouts", st.timeouts), ("crashes", st.crashes), ("tagged", st.tagged),
                            ("enabled", int(f.enabled)), ("seconds", st.total_s)):
            metrics.set(f"filter_stats_{name}", value, filter=f.name, revision=f.revision)


class InProcessRunner:
    """Runs loaded filters in priority order over a batch of loci, in this process.

    The in-process runner is for trusted, built-in filters (and, inside each sandbox
    child, for the user filters it hosts); user filters run in the isolated pool
    (:mod:`broker.sandbox`), which reuses this bookkeeping.
    """

    def __init__(
        self,
        filters: list[LoadedFilter],
        slow_s: float = 5.0,
        max_errors: int = 50,
        error_window_s: float = 600.0,
        on_disable=None,
        enforce_budget: bool = False,
        policy: ErrorPolicy | None = None,
        metrics: Metrics | None = None,
    ):
        self.filters = sorted(filters, key=lambda f: f.priority)
        self.slow_s = slow_s
        self.enforce_budget = enforce_budget
        self.metrics = metrics
        self.policy = policy or ErrorPolicy(max_errors, error_window_s, on_disable=on_disable, metrics=metrics)

    @property
    def max_errors(self) -> int:
        return self.policy.max_errors

    @property
    def error_window_s(self) -> float:
        return self.policy.error_window_s

    def export_metrics(self, metrics: Metrics) -> None:
        export_filter_metrics(self.filters, metrics)

    def close(self) -> None:
        """Nothing to release: in-process filters hold no child processes."""

    def prepare(self) -> None:
        """In-process filters were instantiated when loaded."""

    def run(self, loci: list[Locus]) -> RunReport:
        report = RunReport()
        for locus in loci:
            run_tags = report.tags_by_locus.setdefault(locus.locus_id, set())
            for f in self.filters:
                if not f.enabled:
                    continue
                self._run_one(f, locus, report, run_tags)
        return report

    def _run_one(self, f: LoadedFilter, locus: Locus, report: RunReport, run_tags: set[str]) -> str:
        """Run one filter on one locus; returns ``ok``, ``skipped``, ``error`` or ``timeout``."""
        try:
            ok = satisfies_constraints(f.instance, locus)
        except Exception as exc:  # a missing ant_survey etc. is the filter's problem, not the worker's
            self.policy.record(f, make_error(f, locus, type(exc).__name__, str(exc), traceback.format_exc()), report)
            ok = False
        if not ok:
            f.stats.skipped += 1
            report.skipped += 1
            return "skipped"
        locus._current = Provenance(f.name, f.revision, broker.__version__, locus.alert.mjd)
        locus._run_tags = set()
        status = "ok"
        t0 = time.perf_counter()
        try:
            with time_budget(self.slow_s if self.enforce_budget else None):
                f.instance._run(locus)
        except FilterTimeout as exc:
            status = "timeout"
            f.stats.timeouts += 1
            self.policy.record(f, make_error(f, locus, "FilterTimeout", str(exc), traceback.format_exc()), report)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, Rust panics (pyo3 PanicException) included: the filter failed
            status = "error"
            self.policy.record(f, make_error(f, locus, type(exc).__name__, str(exc), traceback.format_exc()), report)
        finally:
            dt = time.perf_counter() - t0
            locus._current = None
            set_tags, locus._run_tags = locus._run_tags, None
        f.stats.observe(dt)
        report.runs += 1
        if status == "ok":
            self.policy.succeeded(f)
        if self.metrics is not None:
            self.metrics.observe("filter_seconds", dt, filter=f.name)
        if dt > self.slow_s:
            f.stats.slow += 1
            log.warning("filter %s took %.2fs on locus %s", f.name, dt, locus.locus_id)
        if set_tags:
            f.stats.tagged += 1
            run_tags.update(set_tags)
        return status
