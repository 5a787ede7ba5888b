"""The filter contract, loading, the in-process runner, and the devkit locus converters.

A filter is a class with the ANTARES devkit's shape: ``REQUIRED_LOCUS_PROPERTIES``,
``REQUIRED_ALERT_PROPERTIES``, ``REQUIRED_TAGS``, ``TRIGGERING_SURVEY``,
``OUTPUT_LOCUS_TAGS``, ``OUTPUT_LOCUS_PROPERTIES``, ``setup()`` and
``_run(locus)``. Classes deriving from ``antares_devkit.models.BaseFilter``
run unmodified; Albireo's own :class:`BaseFilter` is the same contract without
the devkit dependency.

Filters are guests: the runner checks constraints, times each call (counters and
a latency histogram per filter), catches every exception with its traceback,
attributes each tag and property to the filter revision that set it, and disables
a filter that keeps failing (:class:`ErrorPolicy`). This module runs trusted
filters in process; :mod:`broker.sandbox` hosts user filters in child processes
and reuses the same runner there. :func:`locus_from_devkit` / :func:`devkit_dict`
convert between the devkit's locus dicts and our :class:`~broker.locus.Locus`
(compatibility tests and the benchmark).
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import hashlib
import importlib
import inspect
import linecache
import logging
import math
import signal
import sys
import threading
import time
import traceback
import types
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import broker
from broker.locus import SURVEYS, Locus, Provenance
from broker.metrics import BUCKETS, Metrics

log = logging.getLogger("albireo.filters")

PROPERTY_PREFIX = {"ztf": "ztf_", "decat": "decat_", "lsst": "lsst_"}


class BaseFilter(abc.ABC):
    """Albireo's filter base class: the ANTARES devkit contract, no devkit needed."""

    REQUIRED_LOCUS_PROPERTIES: list[str] = []
    REQUIRED_TAGS: list[str] = []
    REQUIRED_ALERT_PROPERTIES: list[str] = []
    TRIGGERING_SURVEY: str = "all"
    OUTPUT_LOCUS_TAGS: list[dict[str, str]] = []
    OUTPUT_LOCUS_PROPERTIES: list[dict[str, Any]] = []
    REQUIRED_GRAV_WAVE_PROB_REGION: float | None = None

    def __init__(self) -> None:
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook, as in the devkit
        """Load models or files once, when the filter is instantiated."""

    @abc.abstractmethod
    def _run(self, locus: Locus) -> None:
        raise NotImplementedError


def satisfies_constraints(f: Any, locus: Locus) -> bool:
    """The devkit's constraint rules, applied to any filter class (ours or the devkit's)."""
    props = locus.properties
    for prop in getattr(f, "REQUIRED_LOCUS_PROPERTIES", []):
        if prop not in props:
            return False
    for tag in getattr(f, "REQUIRED_TAGS", []):
        if tag not in locus.tags:
            return False
    alert = locus.alert
    survey = alert.properties["ant_survey"]
    for prop in getattr(f, "REQUIRED_ALERT_PROPERTIES", []):
        for name, prefix in PROPERTY_PREFIX.items():
            if prop.startswith(prefix) and survey not in SURVEYS[name]:
                break
        else:
            if prop not in alert.properties:
                return False
    max_level = getattr(f, "REQUIRED_GRAV_WAVE_PROB_REGION", None)
    if max_level and not any(gw["contour_level"] <= max_level for gw in alert.grav_wave_events):
        return False
    trig = getattr(f, "TRIGGERING_SURVEY", "all")
    return trig == "all" or survey in SURVEYS[trig]


def source_hash(cls: type) -> str:
    """A revision id for a filter class: the hash of its module's source."""
    try:
        src = inspect.getsource(inspect.getmodule(cls))
    except (OSError, TypeError):
        src = cls.__qualname__
    return hashlib.sha256(src.encode()).hexdigest()[:12]


def code_hash(code: str) -> str:
    """The full SHA-256 of a filter's source: the revision id is its first 12 hex digits."""
    return hashlib.sha256(code.encode()).hexdigest()


# ---- loading filter code --------------------------------------------------------------------
class FilterLoadError(Exception):
    """A filter's code cannot be loaded; ``missing`` names the absent dependency, if that is why."""

    def __init__(self, message: str, missing: str | None = None):
        super().__init__(message)
        self.missing = missing


def load_filter_module(code: str, module_name: str, filename: str = "<filter>") -> types.ModuleType:
    """Execute filter source as a fresh module (registered in ``sys.modules`` so tracebacks and pickling work).

    Every failure becomes a :class:`FilterLoadError` whose message says what to fix:
    the line of a syntax error, the name of a missing package, or the exception raised on import.
    """
    try:
        compiled = compile(code, filename, "exec")
    except SyntaxError as exc:
        raise FilterLoadError(f"syntax error in {filename} line {exc.lineno}: {exc.msg}") from None
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compiled, module.__dict__)
    except ModuleNotFoundError as exc:
        sys.modules.pop(module_name, None)
        raise FilterLoadError(f"cannot load: missing dependency {exc.name!r} ({exc})", missing=exc.name) from None
    except BaseException as exc:  # SystemExit and friends included: importing must not end the process
        sys.modules.pop(module_name, None)
        raise FilterLoadError(f"importing {filename} raised {type(exc).__name__}: {exc}") from None
    return module


def instantiate(cls: type) -> Any:
    """``cls()`` (which runs ``setup()``), turning failures into :class:`FilterLoadError`."""
    try:
        return cls()
    except ModuleNotFoundError as exc:
        raise FilterLoadError(f"cannot load {cls.__name__}: missing dependency {exc.name!r}", missing=exc.name) from None
    except BaseException as exc:
        raise FilterLoadError(f"{cls.__name__}.setup() raised {type(exc).__name__}: {exc}") from None


def filter_classes_in_code(code: str, module_name: str = "albireo_filter_probe") -> list[type]:
    """The filter classes a source file defines (loading it in this process: only for trusted callers)."""
    return find_filter_classes(load_filter_module(code, module_name))


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

    @property
    def output_tags(self) -> list[str]:
        tags = self.output_locus_tags or getattr(self.instance, "OUTPUT_LOCUS_TAGS", [])
        return [t["name"] if isinstance(t, dict) else str(t) for t in tags]


def load_filter_class(cls: type, name: str | None = None, priority: int = 0) -> LoadedFilter:
    return LoadedFilter(name=name or cls.__name__, revision=source_hash(cls), instance=cls(), priority=priority)


def find_filter_classes(module: Any) -> list[type]:
    """Concrete filter classes defined in ``module`` (ours or devkit subclasses)."""
    out = []
    for obj in vars(module).values():
        if (
            inspect.isclass(obj)
            and obj.__module__ == module.__name__
            and hasattr(obj, "_run")
            and not inspect.isabstract(obj)
            and hasattr(obj, "OUTPUT_LOCUS_TAGS")
        ):
            out.append(obj)
    return out


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

    Shared by the in-process runner and the sandbox pool so both count alike; ``on_error``
    and ``on_disable`` hooks feed notifications (see :mod:`broker.notify`).
    """

    def __init__(self, max_errors: int = 50, error_window_s: float = 600.0, on_disable=None, on_error=None,
                 metrics: Metrics | None = None):
        self.max_errors = max_errors
        self.error_window_s = error_window_s
        self.on_disable = on_disable
        self.on_error = on_error
        self.metrics = metrics

    def record(self, f: LoadedFilter, err: FilterError, report: RunReport) -> None:
        f.stats.errors += 1
        f.recent_errors.append(err)
        report.errors.append(err)
        if self.metrics is not None:
            self.metrics.inc("filter_errors_by_filter", filter=f.name, exception=err.exception)
        log.warning("filter %s@%s raised %s on locus %s (alert %s): %s",
                    f.name, f.revision, err.exception, err.locus_id, err.alert_id, err.message)
        if self.on_error:
            self._safely(self.on_error, f, err)
        now = err.at
        recent = sum(1 for e in f.recent_errors if now - e.at <= self.error_window_s)
        if self.max_errors and recent >= self.max_errors and f.enabled:
            f.enabled = False
            f.disabled_reason = (f"{recent} errors within {self.error_window_s:.0f}s; "
                                 f"last: {err.exception}: {err.message}")
            log.error("filter %s disabled: %s", f.name, f.disabled_reason)
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


class FilterRunner:
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
        if self.metrics is not None:
            self.metrics.observe("filter_seconds", dt, filter=f.name)
        if dt > self.slow_s:
            f.stats.slow += 1
            log.warning("filter %s took %.2fs on locus %s", f.name, dt, locus.locus_id)
        if set_tags:
            f.stats.tagged += 1
            run_tags.update(set_tags)
        return status


# ---- the devkit's loci ↔ ours ------------------------------------------------------------------
def _devkit_split_properties(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(internal, user) properties of a devkit locus dict, split as ``DevKitLocus`` splits ``old_properties``."""
    internal = dict(d.get("internal_properties") or {})
    user = dict(d.get("user_properties") or {})
    old = d.get("old_properties") or {}
    if old:
        internal = {k: v for k, v in old.items() if k in DEVKIT_INTERNAL_KEYS}
        user = {k: v for k, v in old.items() if k not in DEVKIT_INTERNAL_KEYS}
    return internal, user


#: the keys ``DevKitLocus.model_post_init`` treats as internal when given ``old_properties``.
DEVKIT_INTERNAL_KEYS = frozenset((
    "num_alerts", "num_mag_values", "brightest_alert_id", "brightest_alert_magnitude",
    "brightest_alert_observation_time", "newest_alert_id", "newest_alert_magnitude",
    "newest_alert_observation_time", "oldest_alert_id", "oldest_alert_magnitude", "oldest_alert_observation_time",
    "is_corrected", "survey", "ztf_object_id", "ztf_ssnamenr", "replaced_by",
))


def locus_from_devkit(d: dict[str, Any]) -> Locus:
    """Our :class:`Locus` from a devkit locus dict (what ``DevKitLocus(**d)`` accepts).

    Alerts keep their devkit properties exactly (the canonical fields are read
    from the ``ant_*`` properties) and their order: ``locus.alert`` is the last one.
    """
    from broker.alert import Alert

    alerts = []
    for a in d["alerts"]:
        props = dict(a.get("properties") or {})
        alert = Alert(
            alert_id=a["id"], survey=int(props.get("ant_survey", 0)), mjd=float(a["mjd"]),
            ra=float(props.get("ant_ra", math.nan)), dec=float(props.get("ant_dec", math.nan)),
            passband=str(props.get("ant_passband", "")), mag=props.get("ant_mag"), magerr=props.get("ant_magerr"),
            maglim=props.get("ant_maglim"), object_id=props.get("ztf_object_id") or props.get("lsst_diaObjectId"),
            locus_id=d["id"], grav_wave_events=list(a.get("grav_wave_events") or []),
        )
        alert.properties = props  # exactly the devkit's view, no added defaults
        alerts.append(alert)
    internal, user = _devkit_split_properties(d)
    gw = d.get("grav_wave_events_metadata") or {}
    if not isinstance(gw, dict):
        gw = {g: {"gracedb_id": g} for g in gw}
    return Locus(
        locus_id=d["id"], ra=float(d["ra"]), dec=float(d["dec"]), alerts=alerts,
        internal_properties=internal, user_properties=user, user_tags=set(d.get("user_tags") or []),
        catalog_objects={k: list(v) for k, v in (d.get("catalog_objects") or {}).items()},
        grav_wave_events_metadata={k: (dict(v) if isinstance(v, dict) else {"gracedb_id": k}) for k, v in gw.items()},
        alert_grav_wave_events={a.alert_id: a.grav_wave_events for a in alerts if a.grav_wave_events},
    )


def devkit_dict(locus: Locus) -> dict[str, Any]:
    """The devkit locus dict equivalent to ``locus`` (``DevKitLocus(**devkit_dict(locus))``)."""
    import datetime

    gw = {}
    for k, v in locus.grav_wave_events_metadata.items():
        gw[k] = {"gracedb_id": k, "notice_type": str(v.get("notice_type", "UPDATE")),
                 "notice_datetime": v.get("notice_datetime") or datetime.datetime(1970, 1, 1)}
    return {
        "id": locus.locus_id, "ra": locus.ra, "dec": locus.dec,
        "alerts": [{"id": a.alert_id, "mjd": a.mjd, "properties": dict(a.properties),
                    "grav_wave_events": list(a.grav_wave_events)} for a in locus.alerts],
        "catalog_objects": {k: list(v) for k, v in locus.catalog_objects.items()},
        "internal_properties": dict(locus.internal_properties),
        "user_properties": dict(locus.user_properties),
        "user_tags": set(locus.user_tags),
        "grav_wave_events_metadata": gw,
    }
