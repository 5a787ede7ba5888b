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
from broker.filtering.contract import (
    declared_tags,
    find_filter_classes,
    satisfies_constraints,
    screen_effects,
    source_hash,
)
from broker.locus import HaltPipeline, Locus, Provenance
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
    #: loci this filter was not run on because a filter it requires did not run successfully there.
    dependency_skipped: int = 0
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
            "crashes": self.crashes, "tagged": self.tagged, "dependency_skipped": self.dependency_skipped,
            "total_s": self.total_s, "slow": self.slow,
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
    #: the recent runs the :class:`ErrorPolicy` judges (created on the first run).
    window: Any = None
    #: filters that must run successfully on a locus before this one (``REQUIRES_FILTERS``).
    requires: tuple[str, ...] = ()

    @property
    def output_tags(self) -> list[str]:
        tags = self.output_locus_tags or getattr(self.instance, "OUTPUT_LOCUS_TAGS", [])
        return [t["name"] if isinstance(t, dict) else str(t) for t in tags]


def load_filter_class(cls: type, name: str | None = None, priority: int = 0) -> LoadedFilter:
    from broker.filtering.dependencies import declared_requires

    return LoadedFilter(name=name or cls.__name__, revision=source_hash(cls), instance=cls(), priority=priority,
                        requires=declared_requires(cls))


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
    #: locus id → the filter that halted the chain on it (``locus.halt()``).
    halted: dict[str, str] = field(default_factory=dict)
    #: locus id → filter name → how its run ended (``ok``, ``halted``, ``error``, ``timeout``, ``crash``,
    #: ``skipped``, ``disabled``, ``dependency_skipped``): what a dependent's skip is decided from.
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: one entry per (filter, locus) not run because a dependency did not run there: filter, locus_id,
    #: dependency, reason. Not errors: the dependent is not charged.
    dependency_skips: list[dict[str, str]] = field(default_factory=list)

    def merge(self, other: RunReport) -> None:
        for lid, tags in other.tags_by_locus.items():
            self.tags_by_locus.setdefault(lid, set()).update(tags)
        self.errors.extend(other.errors)
        self.halted.update(other.halted)
        for lid, out in other.outcomes.items():
            self.outcomes.setdefault(lid, {}).update(out)
        self.dependency_skips.extend(other.dependency_skips)
        self.runs += other.runs
        self.skipped += other.skipped

    def outcome(self, locus_id: str, filter_name: str, status: str) -> None:
        """Record how ``filter_name`` ended on ``locus_id`` (its dependents read it)."""
        self.outcomes.setdefault(locus_id, {})[filter_name] = status


#: the most dependency skips a report keeps in full (the counters count all of them).
MAX_DEPENDENCY_SKIPS_KEPT = 1000


def skip_if_blocked(f: LoadedFilter, locus: Locus, report: RunReport) -> bool:
    """True (and the skip counted and recorded, not charged) when a filter ``f`` requires did not run ok here."""
    if not f.requires:
        return False
    from broker.filtering.dependencies import blocked_reason

    blocked = blocked_reason(f.requires, report.outcomes.get(locus.locus_id))
    if blocked is None:
        return False
    dep, reason = blocked
    f.stats.dependency_skipped += 1
    report.outcome(locus.locus_id, f.name, "dependency_skipped")
    if len(report.dependency_skips) < MAX_DEPENDENCY_SKIPS_KEPT:
        report.dependency_skips.append({"filter": f.name, "revision": f.revision, "locus_id": locus.locus_id,
                                        "dependency": dep, "reason": reason})
    return True


class RunWindow:
    """The last ``size`` runs of one filter: how many failed and how long they took (running sums)."""

    __slots__ = ("durations", "failed", "failures", "size", "total_s")

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self.failed: deque = deque()
        self.durations: deque = deque()
        self.failures = 0
        self.total_s = 0.0

    def add(self, failed: bool, dt: float) -> None:
        self.failed.append(failed)
        self.durations.append(dt)
        self.failures += failed
        self.total_s += dt
        while len(self.failed) > self.size:
            self.failures -= self.failed.popleft()
            self.total_s -= self.durations.popleft()

    def __len__(self) -> int:
        return len(self.failed)


class ErrorPolicy:
    """Judges every run of a filter, and disables one whose error *rate* or mean time is too high.

    Over a sliding window of the last ``window_runs`` runs (once at least ``min_runs`` ran), a
    filter is disabled when the fraction of failed runs (errors, timeouts, crashes, rejected output)
    reaches ``max_error_rate``, or when its mean time per locus exceeds ``max_mean_s`` (an aggregate
    budget: a filter just under the per-locus limit on every locus costs a core). A rate, not a
    count, so that a burst of odd packets cannot switch a filter off for everyone. ``max_consecutive``
    (off by default) also stops a filter after that many failed runs in a row: what ``albireo filter
    test`` uses, so that a filter that hangs costs a few budgets, not one per locus. 0 turns a rule
    off. Shared by the in-process runner and the sandbox pool so both count alike; ``on_error`` and
    ``on_disable`` hooks feed notifications (see :mod:`broker.filtering.notify`).
    """

    def __init__(self, max_error_rate: float = 0.5, window_runs: int = 1000, min_runs: int = 200,
                 max_mean_s: float = 0.0, on_disable=None, on_error=None, metrics: Metrics | None = None,
                 max_consecutive: int = 0):
        self.max_error_rate = max_error_rate
        self.window_runs = window_runs
        self.min_runs = min_runs
        self.max_mean_s = max_mean_s
        self.on_disable = on_disable
        self.on_error = on_error
        self.metrics = metrics
        self.max_consecutive = max_consecutive

    @classmethod
    def from_config(cls, filters: Any, **hooks: Any) -> ErrorPolicy:
        """The policy ``[filters]`` sets (``max_error_rate``, ``error_window_runs``, ``min_runs``, ``max_mean_s``)."""
        return cls(filters.max_error_rate, filters.error_window_runs, filters.min_runs, filters.max_mean_s, **hooks)

    def observe(self, f: LoadedFilter, dt: float, errors: list[FilterError], report: RunReport) -> None:
        """One run of ``f`` finished after ``dt`` seconds; ``errors`` empty when it did not fail."""
        for err in errors:
            self.record(f, err, report)
        if f.window is None or f.window.size != self.window_runs:
            f.window = RunWindow(self.window_runs)
        f.window.add(bool(errors), dt)
        f.consecutive_failures = f.consecutive_failures + 1 if errors else 0
        if not f.enabled:
            return
        reason, last = self._verdict(f), errors[-1] if errors else None
        if reason is None:
            return
        if last is None:  # too slow: the filter is charged with that, as with any error
            last = FilterError(f.name, f.revision, "", "", "FilterTooSlow", reason, reason, time.time())
            self.record(f, last, report)
        self.disable(f, reason, last)

    def _verdict(self, f: LoadedFilter) -> str | None:
        if self.max_consecutive and f.consecutive_failures >= self.max_consecutive:
            return f"stopped after {f.consecutive_failures} failed runs in a row"
        w = f.window
        n = len(w)
        if n < max(1, min(self.min_runs, self.window_runs)):
            return None
        if self.max_error_rate and w.failures / n >= self.max_error_rate:
            return (f"failed {w.failures} of its last {n} runs ({w.failures / n:.0%}; the limit is "
                    f"{self.max_error_rate:.0%})")
        if self.max_mean_s and w.total_s / n > self.max_mean_s:
            return (f"took {w.total_s / n:.2f}s per locus on average over its last {n} runs (the aggregate "
                    f"budget is {self.max_mean_s:g}s)")
        return None

    def record(self, f: LoadedFilter, err: FilterError, report: RunReport) -> None:
        """Count and report one error (the run's verdict is :meth:`observe`'s)."""
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

    def disable(self, f: LoadedFilter, reason: str, err: FilterError | None = None) -> None:
        if not f.enabled:
            return
        f.enabled = False
        f.disabled_reason = f"{reason}; last: {err.exception}: {err.message}" if err else reason
        log.error("filter %s disabled: %s", f.name, f.disabled_reason,
                  extra={"filter": f.name, "revision": f.revision})
        if self.on_disable:
            self._safely(self.on_disable, f, err)

    @staticmethod
    def _safely(hook, f: LoadedFilter, err: FilterError | None) -> None:
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
                            ("dependency_skipped", st.dependency_skipped),
                            ("enabled", int(f.enabled)), ("seconds", st.total_s)):
            metrics.set(f"filter_stats_{name}", value, filter=f.name, revision=f.revision)


def declared_tag_set(f: LoadedFilter) -> frozenset[str]:
    """The tags ``f`` may set: those it declares in ``OUTPUT_LOCUS_TAGS``."""
    return frozenset(declared_tags(f.output_locus_tags or getattr(f.instance, "OUTPUT_LOCUS_TAGS", [])))


def rejected_output_error(f: LoadedFilter, locus: Locus, problems: list[str]) -> FilterError:
    """The error a filter is charged with when (part of) what it set is refused."""
    msg = f"{len(problems)} output(s) refused: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
    return make_error(f, locus, "FilterOutputRejected", msg, "\n".join(problems[:100]))


def apply_effects(f: LoadedFilter, locus: Locus, tags: list[str], props: list[tuple[str, Any]],
                  run_tags: set[str]) -> None:
    """Apply screened effects of one call of ``f`` to ``locus``, with provenance the caller assigns."""
    prov = Provenance(f.name, f.revision, broker.__version__, locus.alert.mjd if locus.alerts else None)
    for key, value in props:
        locus.user_properties[key] = value
        locus.provenance[f"property:{key}"] = prov
    for tag in tags:
        locus.user_tags.add(tag)
        locus.provenance.setdefault(tag, prov)
        run_tags.add(tag)
    if tags:
        f.stats.tagged += 1


class InProcessRunner:
    """Runs loaded filters in priority order over a batch of loci, in this process.

    The in-process runner is for trusted, built-in filters; user filters run in the isolated pool
    (:mod:`broker.filtering.sandbox`), which shares the bookkeeping. What a call sets is screened
    as the sandbox screens it (:func:`~broker.filtering.contract.screen_effects`): an undeclared
    tag or a value no consumer can carry is undone and charged to the filter, never to the data.
    ``policy_options`` build the :class:`ErrorPolicy` when no ``policy`` is given.
    """

    def __init__(self, filters: list[LoadedFilter], slow_s: float = 5.0, enforce_budget: bool = False,
                 policy: ErrorPolicy | None = None, metrics: Metrics | None = None, **policy_options: Any):
        from broker.filtering.dependencies import order_filters

        self.filters = order_filters(filters)
        self.slow_s = slow_s
        self.enforce_budget = enforce_budget
        self.metrics = metrics
        self.policy = policy or ErrorPolicy(metrics=metrics, **policy_options)
        self._declared: dict[int, frozenset[str]] = {}

    def export_metrics(self, metrics: Metrics) -> None:
        export_filter_metrics(self.filters, metrics)

    def close(self) -> None:
        """Nothing to release: in-process filters hold no child processes."""

    def prepare(self) -> None:
        """In-process filters were instantiated when loaded."""

    def run(self, loci: list[Locus]) -> RunReport:
        report = RunReport()
        for locus in loci:
            locus.halted_by = None
            run_tags = report.tags_by_locus.setdefault(locus.locus_id, set())
            for f in self.filters:
                if locus.halted_by is not None:
                    break
                self.run_or_skip(f, locus, report, run_tags)
        return report

    def run_or_skip(self, f: LoadedFilter, locus: Locus, report: RunReport, run_tags: set[str]) -> str:
        """Run ``f`` on ``locus`` unless it is disabled or a dependency did not run ok; record the outcome."""
        if not f.enabled:
            report.outcome(locus.locus_id, f.name, "disabled")
            return "disabled"
        if skip_if_blocked(f, locus, report):
            return "dependency_skipped"
        status = self._run_one(f, locus, report, run_tags)
        report.outcome(locus.locus_id, f.name, status)
        return status

    def _run_one(self, f: LoadedFilter, locus: Locus, report: RunReport, run_tags: set[str]) -> str:
        """Run one filter on one locus; returns ``ok``, ``halted``, ``skipped``, ``error`` or ``timeout``.

        A locus an earlier filter halted is not run (``halted``, not counted as a run).
        """
        if locus.halted_by is not None:
            return "halted"
        try:
            ok = satisfies_constraints(f.instance, locus)
        except Exception as exc:  # a missing ant_survey etc. is the filter's problem, not the worker's
            err = make_error(f, locus, type(exc).__name__, str(exc), traceback.format_exc())
            f.stats.observe(0.0)
            report.runs += 1
            self.policy.observe(f, 0.0, [err], report)
            return "error"
        if not ok:
            f.stats.skipped += 1
            report.skipped += 1
            return "skipped"
        current = Provenance(f.name, f.revision, broker.__version__, locus.alert.mjd)
        props_before, prov_before, tags_before = dict(locus.user_properties), dict(locus.provenance), set(locus.user_tags)
        locus._current = current
        locus._run_tags = set()
        status = "ok"
        errors: list[FilterError] = []
        t0 = time.perf_counter()
        try:
            with time_budget(self.slow_s if self.enforce_budget else None):
                f.instance._run(locus)
        except HaltPipeline:  # locus.halt(): a successful run that ends the chain for this locus
            status = "halted"
            locus.halted_by = f.name
            report.halted[locus.locus_id] = f.name
        except FilterTimeout as exc:
            status = "timeout"
            f.stats.timeouts += 1
            errors.append(make_error(f, locus, "FilterTimeout", str(exc), traceback.format_exc()))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, Rust panics (pyo3 PanicException) included: the filter failed
            status = "error"
            errors.append(make_error(f, locus, type(exc).__name__, str(exc), traceback.format_exc()))
        finally:
            dt = time.perf_counter() - t0
            locus._current = None
            set_tags, locus._run_tags = locus._run_tags, None
        set_props = [(k[9:], locus.user_properties.get(k[9:])) for k, p in locus.provenance.items()
                     if p is current and k.startswith("property:")]
        declared = self._declared.get(id(f))
        if declared is None:
            declared = self._declared[id(f)] = declared_tag_set(f)
        tags, props, problems = screen_effects(sorted(set_tags or ()), set_props, declared)
        for k in [k for k, p in locus.provenance.items() if not isinstance(p, Provenance)]:
            problems.append(f"provenance entry {str(k)[:100]!r} is not a provenance record")
            if k in prov_before and isinstance(prov_before[k], Provenance):
                locus.provenance[k] = prov_before[k]
            else:
                del locus.provenance[k]
        if problems:  # undo what may not stay (what the filter set validly stays, as after an exception)
            refused_tags = (set_tags or set()) - set(tags)
            locus.user_tags -= refused_tags - tags_before
            allowed = {k for k, _ in props}
            for k, _ in set_props:
                if k not in allowed:
                    if k in props_before:
                        locus.user_properties[k] = props_before[k]
                    else:
                        locus.user_properties.pop(k, None)
                    if f"property:{k}" in prov_before:
                        locus.provenance[f"property:{k}"] = prov_before[f"property:{k}"]
                    else:
                        locus.provenance.pop(f"property:{k}", None)
            for t in refused_tags:
                if locus.provenance.get(t) is current:
                    locus.provenance.pop(t)
            errors.append(rejected_output_error(f, locus, problems))
            if status in ("ok", "halted"):
                status = "error"
        f.stats.observe(dt)
        report.runs += 1
        if self.metrics is not None:
            self.metrics.observe("filter_seconds", dt, filter=f.name)
        if dt > self.slow_s:
            f.stats.slow += 1
            log.warning("filter %s took %.2fs on locus %s", f.name, dt, locus.locus_id)
        if tags:
            f.stats.tagged += 1
            run_tags.update(tags)
        self.policy.observe(f, dt, errors, report)
        return status
