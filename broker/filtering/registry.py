"""The filter registry: submitted revisions, their status, local tests and dry-run backfills.

Plain functions over a :class:`~broker.storage.base.Store`, so that the CLI
(``albireo filter ...``) and the HTTP API (``web/``) share one implementation.
Every submission is a *revision*: its code, hash, author, creation time and a
status that moves ``submitted → approved → enabled ⇄ disabled`` (or ``submitted →
rejected``). An operator reviews each revision (:func:`review`: who, when, a note);
with ``[filters] require_review`` (the default) an unapproved revision cannot be
enabled (:class:`NotApproved`). At most one revision of a filter is enabled;
enabling another disables the previous one. A filter may declare the filters it
depends on (``REQUIRES_FILTERS``); enabling it is refused while one of them is not
enabled or when the declarations form a cycle (:class:`DependencyError`). Workers
poll :func:`enabled_specs` (in dependency order) and load changes without restarting.

A submission is inspected without executing it in this process: its filter class
is found with :mod:`ast`, and loading (imports, ``setup()``) is tried inside a
sandbox child; a filter that cannot load is stored with the reason (e.g. the
missing dependency named) and cannot be enabled.
"""

from __future__ import annotations

import ast
import datetime
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from broker.filtering.contract import FilterLoadError, code_hash
from broker.filtering.dependencies import DependencyError, check_enabled_set, declared_requires
from broker.filtering.platform import PlatformRunner, loaded_from_spec
from broker.filtering.runner import export_filter_metrics
from broker.filtering.sandbox import FilterSpec, SandboxLimits, SandboxPool
from broker.locus import Locus

STATUSES = ("submitted", "approved", "rejected", "enabled", "disabled")
#: review decisions (:func:`review`).
DECISIONS = ("approved", "rejected")
DEFAULT_PRIORITY = 100


class FilterRejected(ValueError):
    """A submission that cannot become a revision at all (no parsable filter class)."""


class NotApproved(ValueError):
    """Enabling a revision no operator approved (or one that was rejected): a conflict with its state."""


# ---- inspecting code without running it ----------------------------------------------------------
def inspect_code(code: str) -> dict[str, Any]:
    """Name, declared outputs and constraints of the filter class in ``code``, read from its syntax tree."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise FilterRejected(f"syntax error at line {exc.lineno}: {exc.msg}") from None
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        methods = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if "_run" not in methods:
            continue
        meta: dict[str, Any] = {"class": node.name}
        for stmt in node.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else [])
            for t in targets:
                if isinstance(t, ast.Name) and (t.id.startswith(("OUTPUT_", "REQUIRED_"))
                                                or t.id in ("TRIGGERING_SURVEY", "REQUIRES_FILTERS")):
                    try:
                        meta[t.id] = ast.literal_eval(stmt.value)
                    except (ValueError, SyntaxError):
                        meta[t.id] = ast.unparse(stmt.value)
        try:
            declared_requires(meta)
        except DependencyError as exc:
            raise FilterRejected(str(exc)) from None
        return meta
    raise FilterRejected("no filter class found: define a class with a _run(self, locus) method")


def probe_load(spec: FilterSpec, limits: SandboxLimits | None = None) -> str | None:
    """Load ``spec`` in a sandbox child: None if it loads, else the reason (missing dependency named)."""
    f = loaded_from_spec(spec)
    with SandboxPool([f], limits or SandboxLimits()) as pool:
        err = pool.load_errors.get(spec.name)
    return err["message"] if err else None


# ---- revisions -----------------------------------------------------------------------------------
def add_revision(store, code: str, author: str, name: str | None = None, priority: int = DEFAULT_PRIORITY,
                 enable: bool = False, limits: SandboxLimits | None = None, approved_by: str | None = None,
                 note: str = "", require_review: bool = True, known: Iterable[str] = ()) -> dict[str, Any]:
    """Register ``code`` as a new revision (idempotent: the same code is the same revision).

    ``approved_by``: an operator approves it at once (the review is recorded as with
    :func:`review`); ``enable``: then enable it, which with ``require_review`` needs that approval.
    ``known``: names of filters that run besides the registry's (the built-ins), for dependencies.
    """
    meta = inspect_code(code)
    name = name or meta["class"]
    digest = code_hash(code)
    revision = digest[:12]
    for rec in store.list_filter_revisions(name):
        if rec["revision"] == revision:
            if approved_by and _decision(rec) != "approved":
                rec = review(store, name, "approved", approved_by, revision, note)
            if enable and rec["status"] != "enabled":
                return set_status(store, name, "enabled", revision, require_review=require_review, known=known)
            return rec
    meta["load_error"] = probe_load(FilterSpec(name, revision, code, priority,
                                               declared_requires(meta)), limits)
    now = time.time()
    rec = {"name": name, "revision": revision, "hash": digest, "code": code, "author": author, "created": now,
           "status": "submitted", "status_reason": "", "status_changed": now, "priority": int(priority),
           "meta": meta}
    store.put_filter_revision(rec)
    if approved_by:
        rec = review(store, name, "approved", approved_by, revision, note)
    if enable:
        return set_status(store, name, "enabled", revision, require_review=require_review, known=known)
    return rec


def _public(rec: dict[str, Any], with_code: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k != "code" or with_code}
    out["load_error"] = (rec.get("meta") or {}).get("load_error")
    out["review"] = review_state(rec)
    out["requires"] = list(declared_requires(rec.get("meta") or {}))
    return out


def review_state(rec: dict[str, Any]) -> dict[str, Any]:
    """The revision's review: ``decision`` (``pending``, ``approved``, ``rejected``), ``by``, ``at``, ``note``."""
    r = (rec.get("meta") or {}).get("review") or {}
    return {"decision": r.get("decision") or "pending", "by": r.get("by"), "at": r.get("at"),
            "note": r.get("note") or ""}


def _decision(rec: dict[str, Any]) -> str:
    return review_state(rec)["decision"]


def review(store, name: str, decision: str, by: str, revision: str | None = None, note: str = "") -> dict[str, Any]:
    """An operator approves or rejects a revision (default: the newest); who, when and why are kept.

    Approving moves a ``submitted`` (or ``rejected``) revision to ``approved``; an enabled or
    disabled one keeps its status and gains the review. Rejecting needs a reason (``note``); a
    rejected revision that was enabled is no longer (workers drop it at their next refresh).
    Every decision is also appended to the revision's ``review_history``.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    by = (by or "").strip()
    if not by:
        raise ValueError("say who reviews the revision (--by NAME)")
    note = (note or "").strip()
    if decision == "rejected" and not note:
        raise ValueError("a rejection needs a reason (--reason TEXT)")
    rec = _revision(store, name, revision)
    now = time.time()
    meta = dict(rec.get("meta") or {})
    entry = {"decision": decision, "by": by[:200], "at": now, "note": note[:4000]}
    meta["review"] = entry
    meta["review_history"] = [*(meta.get("review_history") or []), entry][-50:]
    status = rec["status"]
    if decision == "rejected":
        status = "rejected"
    elif status in ("submitted", "rejected"):
        status = "approved"
    reason = f"{decision} by {entry['by']}" + (f": {entry['note']}" if entry["note"] else "")
    new = {**rec, "meta": meta, "status": status, "status_reason": reason, "status_changed": now}
    store.put_filter_revision(new)
    return _public(_revision(store, name, rec["revision"]))


def list_filters(store) -> list[dict[str, Any]]:
    """One row per filter: its newest revision, the enabled one (if any), counts."""
    by_name: dict[str, list[dict]] = {}
    for rec in store.list_filter_revisions():
        by_name.setdefault(rec["name"], []).append(rec)
    out = []
    for name, recs in sorted(by_name.items()):
        recs.sort(key=lambda r: (r["created"] or 0.0, r["revision"]))
        latest = recs[-1]
        enabled = [r for r in recs if r["status"] == "enabled"]
        out.append({"name": name, "latest_revision": latest["revision"], "author": latest["author"],
                    "created": latest["created"], "status": enabled[0]["status"] if enabled else latest["status"],
                    "enabled_revision": enabled[0]["revision"] if enabled else None, "revisions": len(recs),
                    "priority": (enabled[0] if enabled else latest)["priority"],
                    "load_error": (latest.get("meta") or {}).get("load_error"),
                    "review": review_state(latest), "latest_status": latest["status"],
                    "requires": list(_spec(enabled[0] if enabled else latest).requires),
                    "tags": [t.get("name") if isinstance(t, dict) else t
                             for t in (latest.get("meta") or {}).get("OUTPUT_LOCUS_TAGS", [])
                             if isinstance(t, (dict, str))]})
    return out


def get_filter(store, name: str) -> dict[str, Any]:
    """A filter with every revision (code included), newest last; KeyError when unknown."""
    recs = store.list_filter_revisions(name)
    if not recs:
        raise KeyError(f"no filter named {name!r}")
    enabled = [r for r in recs if r["status"] == "enabled"]
    return {"name": name, "enabled_revision": enabled[0]["revision"] if enabled else None,
            "revisions": [_public(r, with_code=True) for r in recs]}


def _revision(store, name: str, revision: str | None) -> dict[str, Any]:
    recs = store.list_filter_revisions(name)
    if not recs:
        raise KeyError(f"no filter named {name!r}")
    if revision is None:
        return recs[-1]
    for r in recs:
        if r["revision"].startswith(revision):
            return r
    raise KeyError(f"filter {name!r} has no revision {revision!r}")


def set_status(store, name: str, status: str, revision: str | None = None, reason: str = "",
               require_review: bool = True, known: Iterable[str] = ()) -> dict[str, Any]:
    """Enable or disable a revision (default: the newest; for ``disabled``, the enabled one).

    Enabling is refused (:class:`NotApproved`) for a rejected revision, and, with
    ``require_review``, for one no operator approved; and (:class:`DependencyError`) when a
    filter it requires is not enabled (``known``: names that run besides the registry's, the
    built-ins) or when the enabled filters would then depend on each other in a cycle.
    """
    if status not in ("enabled", "disabled"):
        raise ValueError("status must be enabled or disabled (approve and reject are reviews: use review())")
    recs = store.list_filter_revisions(name)
    if status == "disabled" and revision is None:
        enabled = [r for r in recs if r["status"] == "enabled"]
        rec = enabled[0] if enabled else _revision(store, name, None)
    else:
        rec = _revision(store, name, revision)
    if status == "enabled":
        err = (rec.get("meta") or {}).get("load_error")
        if err:
            raise ValueError(f"{name}@{rec['revision']} cannot be enabled: {err}")
        rv = review_state(rec)
        if rv["decision"] == "rejected":
            raise NotApproved(f"{name}@{rec['revision']} cannot be enabled: it was rejected by {rv['by']}"
                              + (f" ({rv['note']})" if rv["note"] else "") + "; submit a new revision or approve "
                              "this one again")
        if require_review and rv["decision"] != "approved" and rec["status"] != "enabled":
            raise NotApproved(f"{name}@{rec['revision']} cannot be enabled: it has not been approved; an operator "
                              f"approves it first (albireo filter approve {name} --revision {rec['revision']} "
                              "--by NAME)")
        others = [r for r in store.list_filter_revisions() if r["status"] == "enabled" and r["name"] != name]
        nodes = [(r["name"], int(r["priority"] or DEFAULT_PRIORITY), declared_requires(r.get("meta") or {}))
                 for r in [*others, rec]]
        nodes += [(k, -1, ()) for k in known if k not in {n for n, _, _ in nodes}]
        try:
            check_enabled_set(nodes)
        except DependencyError as exc:
            raise DependencyError(f"{name}@{rec['revision']} cannot be enabled: {exc}") from None
        for other in recs:
            if other["status"] == "enabled" and other["revision"] != rec["revision"]:
                store.set_filter_status(name, other["revision"], "disabled", f"replaced by {rec['revision']}")
    store.set_filter_status(name, rec["revision"], status, reason)
    return _public(_revision(store, name, rec["revision"]))


def _spec(r: dict[str, Any]) -> FilterSpec:
    try:
        requires = declared_requires(r.get("meta") or {})
    except DependencyError:
        requires = ()
    return FilterSpec(r["name"], r["revision"], r["code"], int(r["priority"] or DEFAULT_PRIORITY), requires)


def enabled_specs(store) -> list[FilterSpec]:
    """What workers load: the enabled revision of every filter, dependencies first, then by priority and name."""
    from broker.filtering.dependencies import topological_order

    specs = sorted((_spec(r) for r in store.list_filter_revisions() if r["status"] == "enabled"),
                   key=lambda s: (s.priority, s.name))
    try:
        names = topological_order([(s.name, s.priority, s.requires) for s in specs], strict=False)
    except DependencyError:  # a cycle enabled behind the registry's back: priority order, dependents skipped
        return specs
    pos = {n: i for i, n in enumerate(names)}
    return sorted(specs, key=lambda s: pos[s.name])


# ---- reports -------------------------------------------------------------------------------------
class _Recorder:
    """Collects, per filter call, what changed on each locus (the devkit's ``filter_report``, for many loci)."""

    def __init__(self, pool: SandboxPool, keep: int = 50):
        self.pool = pool
        self.keep = keep
        self.per_locus: list[dict[str, Any]] = []
        self.tags: Counter = Counter()
        self.props: dict[str, dict[str, Any]] = {}
        self.loci: set[str] = set()
        self.examples: dict[str, list[str]] = {}

    def run(self, loci: list[Locus]):
        before = {x.locus_id: (set(x.user_tags), dict(x.user_properties)) for x in loci}
        report = self.pool.run(loci)
        for x in loci:
            tags0, props0 = before[x.locus_id]
            self.loci.add(x.locus_id)
            new_tags = sorted(x.user_tags - tags0)
            new_props = {k: v for k, v in x.user_properties.items() if k not in props0 or props0[k] != v}
            for t in new_tags:
                self.tags[t] += 1
                ex = self.examples.setdefault(t, [])
                if len(ex) < 20:
                    ex.append(x.locus_id)
            for k, v in new_props.items():
                p = self.props.setdefault(k, {"count": 0, "examples": []})
                p["count"] += 1
                if len(p["examples"]) < 5:
                    p["examples"].append(v)
            if (new_tags or new_props) and len(self.per_locus) < self.keep:
                self.per_locus.append({"locus_id": x.locus_id, "alert_id": x.alert.id if x.alerts else "",
                                       "new_tags": new_tags, "new_properties": new_props})
        return report

    def export_metrics(self, metrics) -> None:
        export_filter_metrics(self.pool.filters, metrics)

    def close(self) -> None:
        """The pool belongs to whoever made the recorder."""

    def prepare(self) -> None:
        """The pool was started by whoever made the recorder."""

    def report(self, f, n_errors_kept: int = 20) -> dict[str, Any]:
        lat = sorted(f.stats.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return {
            "filter": f.name, "revision": f.revision,
            "load_error": self.pool.load_errors.get(f.name, {}).get("message"),
            "disabled_reason": f.disabled_reason or None,
            "loci": len(self.loci), "runs": f.stats.runs, "skipped": f.stats.skipped,
            "dependency_skipped": f.stats.dependency_skipped,
            "tags": dict(self.tags), "tag_examples": self.examples, "properties": self.props,
            "timing": {"total_s": f.stats.total_s, "p50_s": pct(0.5), "p99_s": pct(0.99),
                       "max_s": lat[-1] if lat else 0.0},
            "error_count": f.stats.errors, "timeouts": f.stats.timeouts, "crashes": f.stats.crashes,
            "stopped": not f.enabled, "failed_everywhere": f.stats.runs > 0 and f.stats.errors >= f.stats.runs,
            "errors": [e.to_dict() for e in list(f.recent_errors)[:n_errors_kept]],
            "changes": self.per_locus,
        }


#: failed runs in a row after which a test or a backfill stops the filter (as production would disable it).
STOP_AFTER_FAILURES = 3


def _pool_for(spec: FilterSpec, limits: SandboxLimits | None):
    from broker.filtering.runner import ErrorPolicy

    # A test or a backfill runs this one filter: what the filters it requires set is read from the
    # loci as stored (a backfill) or is absent (a test); it is not skipped for their not running here.
    f = loaded_from_spec(FilterSpec(spec.name, spec.revision, spec.code, spec.priority))
    # A test or a backfill reports every error and ignores the error-rate limit, but stops a filter
    # that fails STOP_AFTER_FAILURES times in a row: a hanging filter costs three budgets, not one per locus.
    return f, SandboxPool([f], limits or SandboxLimits(), ErrorPolicy(max_error_rate=0, max_mean_s=0,
                                                                         max_consecutive=STOP_AFTER_FAILURES))


def test_filter(code: str, alerts: list[str | Path] | None = None, loci: list[Locus] | None = None,
                limits: SandboxLimits | None = None, radius_arcsec: float = 1.0) -> dict[str, Any]:
    """Run ``code`` (sandboxed) on real packets, as the pipeline would, and report what it did.

    ``alerts``: Avro files or folders; each packet is ingested in turn (a throwaway
    in-memory store) and the filter runs after each, exactly as in production.
    ``loci``: ready-made loci instead (each run once).
    """
    meta = inspect_code(code)
    spec = FilterSpec(meta["class"], code_hash(code)[:12], code, DEFAULT_PRIORITY)
    f, pool = _pool_for(spec, limits)
    t0 = time.perf_counter()
    with pool:
        rec = _Recorder(pool)
        if loci is not None:
            rec.run(loci)
        if alerts:
            _ingest(alerts, rec, radius_arcsec)
        out = rec.report(f)
    out["wall_s"] = time.perf_counter() - t0
    out["declared"] = {k: v for k, v in meta.items() if k != "class"}
    return out


def _ingest(paths: list[str | Path], runner, radius_arcsec: float) -> None:
    """Ingest ``paths`` through the embedded worker (in-memory store and index), ``runner`` as the filters."""
    from broker.assemble import embedded_worker
    from broker.config import Config

    cfg = Config()
    cfg.association.radius_arcsec = radius_arcsec
    cfg.store.path = cfg.search.path = cfg.search.outbox_path = ":memory:"
    cfg.catalogs.enabled = False
    with tempfile.TemporaryDirectory(prefix="albireo-filter-test-") as tmp:
        with embedded_worker(cfg, [Path(p) for p in paths], tmp, filters=runner, batch_size=200) as assembly:
            assembly.worker.run()


def to_mjd(value: str | float | None) -> float | None:
    """An MJD from a number or an ISO date/time (UTC); ValueError saying what was expected otherwise."""
    if value is None or value == "":
        return None
    try:
        mjd = float(value)
    except (TypeError, ValueError):
        pass
    else:
        if not math.isfinite(mjd):
            raise ValueError(f"{value!r} is not a finite MJD")
        return mjd
    try:
        dt = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is neither an MJD nor an ISO date such as 2024-10-01 or "
                         "2024-10-01T12:00:00") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.UTC).replace(tzinfo=None)
    return (dt - datetime.datetime(1858, 11, 17)).total_seconds() / 86400.0


def backfill_filter(store, name: str, since: str | float | None = None, until: str | float | None = None,
                  revision: str | None = None, limit: int | None = None, limits: SandboxLimits | None = None,
                  batch_size: int = 200, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Dry run of a revision over stored loci whose newest alert lies in [since, until]: nothing is written.

    ``on_batch`` is called with the number of loci of each batch run (progress bars).
    """
    rec = _revision(store, name, revision)
    spec = _spec(rec)
    lo, hi = to_mjd(since), to_mjd(until)
    f, pool = _pool_for(spec, limits)
    t0 = time.perf_counter()
    seen = 0
    with pool:
        recorder = _Recorder(pool)
        for batch in store.iter_loci(batch_size=batch_size, since_mjd=lo, until_mjd=hi):
            if limit is not None:
                batch = batch[: max(0, limit - seen)]
            if not batch:
                break
            recorder.run(batch)  # the loaded copies change; they are never saved
            seen += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
            if not f.enabled:
                break  # stopped after repeated failures: the report says why
        out = recorder.report(f)
    out.update(dry_run=True, since_mjd=None if lo is None or math.isinf(lo) else lo, until_mjd=hi,
               wall_s=time.perf_counter() - t0)
    return out


def compare_revisions(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Two revisions on the same stored loci (see :func:`broker.filtering.backfill.compare_revisions`)."""
    from broker.filtering.backfill import compare_revisions as compare

    return compare(*args, **kwargs)


def run_backfill(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """A writing, resumable backfill (see :func:`broker.filtering.backfill.run_backfill`)."""
    from broker.filtering.backfill import run_backfill as run

    return run(*args, **kwargs)


def platform_runner(store, builtins: list, limits: SandboxLimits | None = None, refresh_s: float = 30.0,
                    **kwargs: Any) -> PlatformRunner:
    """A :class:`PlatformRunner` whose user filters follow ``store``'s registry."""
    return PlatformRunner(builtins, revisions=lambda: enabled_specs(store), limits=limits, refresh_s=refresh_s,
                          **kwargs)


__all__ = ["DependencyError", "FilterLoadError", "FilterRejected", "NotApproved", "add_revision", "review",
           "compare_revisions", "run_backfill", "enabled_specs", "get_filter", "inspect_code",
           "list_filters", "platform_runner", "backfill_filter", "set_status", "test_filter"]
test_filter.__test__ = False  # a library function, not a pytest test
