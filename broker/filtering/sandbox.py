"""User filters run here: child processes with limits, fed loci in batches.

Why a process and not a thread: a filter that segfaults, calls ``os._exit``, leaks
memory or spins in C code can only be stopped, and the worker kept alive, if it
runs in another process. Each child hosts every sandboxed filter (imports are paid
once per child, not per call), receives a batch of loci in one pickle, rebuilds
them as :class:`~broker.locus.Locus` and sends back, per locus, only the *effects*:
tags and properties set (with provenance), errors with tracebacks, and timings.
The parent applies those effects to its own loci, so a child can never change
anything else (the child works on copies: a read-only view of the data).

What is enforced, and how (see ``docs/writing-filters.md``):

* time: ``SIGALRM`` in the child interrupts a filter after ``timeout_s``; if the
  call is stuck in C code, the parent kills the child after ``timeout_s + grace_s``;
* memory: ``RLIMIT_AS`` (a big allocation raises ``MemoryError`` in the filter);
  CPU: ``RLIMIT_CPU`` per child lifetime as a backstop;
* network: a new network namespace (kernel-enforced, when the worker may create
  one: root or CAP_SYS_ADMIN) *and* an audit hook refusing socket creation,
  connection and name lookups;
* files: the child runs in a private temporary directory and an audit hook refuses
  opening files for writing (and deleting, renaming, ...) outside it, and starting
  processes. Audit hooks stop accidents and ordinary code, not a determined
  attacker using ``ctypes``: the kernel-enforced parts are the process boundary,
  the rlimits and the network namespace.

A child that dies (segfault, ``os._exit``, killed on timeout) is replaced; the
filter that was running is charged with the error for that locus (the parent
knows which one from a small shared-memory record the child updates around each
call), and the rest of the batch is re-sent, without that filter for that locus.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from broker.alert import Alert
from broker.filtering.contract import FilterLoadError, find_filter_classes, instantiate, load_filter_module
from broker.filtering.runner import ErrorPolicy, FilterError, InProcessRunner, LoadedFilter, RunReport
from broker.locus import Locus, Provenance
from broker.metrics import Metrics

log = logging.getLogger("albireo.sandbox")


#: environment of the children: one thread per numeric library (RLIMIT_AS counts every thread's stack).
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "NUMBA_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class FilterSpec:
    """A registered filter revision as the sandbox needs it."""

    name: str
    revision: str
    code: str
    priority: int = 100


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0
    grace_s: float = 2.0
    memory_mb: int = 4096
    cpu_s: int = 3600
    network: bool = False
    processes: int = 1
    batch_size: int = 64
    #: seconds a child may take to start and load every filter.
    start_timeout_s: float = 120.0

    @classmethod
    def from_config(cls, filters: Any, timeout_s: float | None = None, processes: int = 1) -> SandboxLimits:
        """The limits ``[filters]`` sets (``timeout_s``, ``memory_mb``); ``timeout_s`` overrides the budget."""
        return cls(timeout_s=timeout_s or filters.timeout_s, memory_mb=filters.memory_mb, processes=processes)


# ---- compact loci over the pipe ----------------------------------------------------------------
def pack_locus(x: Locus) -> tuple:
    """Everything a filter may read, as plain tuples/dicts (cheap to pickle; no cached light curves)."""
    alerts = [(a.alert_id, a.survey, a.mjd, a.ra, a.dec, a.passband, a.mag, a.magerr, a.maglim, a.properties,
               a.object_id, a.is_history, a.grav_wave_events, a.neutrino_events) for a in x.alerts]
    return (x.locus_id, x.ra, x.dec, alerts, x.internal_properties, x.user_properties, sorted(x.user_tags),
            x.catalog_objects, x.grav_wave_events_metadata, x.neutrino_events_metadata)


def unpack_locus(t: tuple) -> Locus:
    lid, ra, dec, rows, internal, user, tags, catalogs, gw, nu = t
    alerts = []
    for aid, survey, mjd, ara, adec, pb, mag, magerr, maglim, props, oid, hist, gwe, nue in rows:
        a = Alert(aid, survey, mjd, ara, adec, pb, mag, magerr, maglim, dict(props), oid, hist, lid, gwe, nue)
        a.properties = props  # exactly what the parent holds (no defaults added by __post_init__)
        alerts.append(a)
    return Locus(locus_id=lid, ra=ra, dec=dec, alerts=alerts, internal_properties=internal,
                 user_properties=user, user_tags=set(tags), catalog_objects=catalogs, grav_wave_events_metadata=gw,
                 neutrino_events_metadata=nu)


# ---- the child -----------------------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown",
                "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}


_PROCESS_EVENTS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "pty.spawn"}


_NET_EVENTS = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
               "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}


class SandboxViolation(PermissionError):
    """An operation the sandbox forbids (network, writing outside the private tmp dir, processes)."""


def _install_guards(tmpdir: str, allow_network: bool) -> None:
    """Audit hook: no sockets, no writes outside ``tmpdir``, no new processes (cannot be removed later)."""
    import socket

    root = os.path.realpath(tmpdir) + os.sep
    allowed_files = {"/dev/null"}

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an already open descriptor
        try:
            p = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return p.startswith(root) or p == root[:-1] or p in allowed_files

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not inside(path):
                raise SandboxViolation(f"filters may not write outside their temporary directory: {path!r}")
        elif event in _PATH_EVENTS:
            for p in args[:2]:
                if isinstance(p, (str, bytes, os.PathLike)) and not inside(p):
                    raise SandboxViolation(f"filters may not modify files outside their temporary directory "
                                           f"({event} {p!r})")
        elif event in _PROCESS_EVENTS:
            raise SandboxViolation(f"filters may not start processes ({event})")
        elif not allow_network and event in _NET_EVENTS:
            if event == "socket.__new__" and len(args) > 1 and args[1] == socket.AF_UNIX:
                return
            raise SandboxViolation(f"filters have no network access ({event})")

    sys.addaudithook(hook)


def _new_network_namespace() -> bool:
    """Move this process into an empty network namespace (loopback down): True if the kernel allowed it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(0x40000000) == 0  # CLONE_NEWNET
    except (OSError, AttributeError):
        return False


def _apply_limits(limits: SandboxLimits) -> None:
    import resource

    if limits.memory_mb:
        b = int(limits.memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (b, b))
    if limits.cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (int(limits.cpu_s), int(limits.cpu_s) + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_main(conn, state, stopped, specs: list[FilterSpec], limits: SandboxLimits, tmpdir: str) -> None:
    """Entry point of a sandbox child: set limits and guards, load the filters, then serve batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    logging.disable(logging.CRITICAL)  # everything a child knows reaches the parent in its results
    sys.dont_write_bytecode = True
    os.chdir(tmpdir)
    os.environ["TMPDIR"] = tmpdir
    tempfile.tempdir = tmpdir
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - filters print; the pipe is the only output
    netns = False if limits.network else _new_network_namespace()
    _apply_limits(limits)
    _install_guards(tmpdir, limits.network)

    loaded: list[LoadedFilter] = []
    load_errors: dict[str, dict[str, Any]] = {}
    for spec in sorted(specs, key=lambda s: s.priority):
        try:
            module = load_filter_module(spec.code, f"albireo_user_{spec.name}_{spec.revision}",
                                        f"<filter {spec.name}@{spec.revision}>")
            classes = find_filter_classes(module)
            if not classes:
                raise FilterLoadError("no filter class found (a class with _run() and OUTPUT_LOCUS_TAGS)")
            loaded.append(LoadedFilter(spec.name, spec.revision, instantiate(classes[0]), spec.priority,
                                       isolation="sandbox"))
        except FilterLoadError as exc:
            load_errors[spec.name] = {"message": str(exc), "missing": exc.missing}
    conn.send(("loaded", load_errors, {"network_namespace": netns, "pid": os.getpid()}))

    policy = ErrorPolicy(max_errors=0)
    runner = InProcessRunner(loaded, slow_s=limits.timeout_s, enforce_budget=True, policy=policy)
    # the parent's index of each filter (its list is every spec in priority order, loaded or not)
    index = {s.name: i for i, s in enumerate(sorted(specs, key=lambda s: s.priority))}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        _, batch_id, items, names = msg
        for idx, packed, skip in items:
            locus = unpack_locus(packed)
            run_tags: set[str] = set()
            locus.provenance = {}
            report = RunReport()
            calls = []
            for f in runner.filters:
                if f.name not in names or f.name in skip or stopped[index[f.name]]:
                    continue  # stopped: the parent disabled it while this batch was under way
                state[0], state[1], state[2] = idx, index[f.name], time.monotonic()
                n_err = len(report.errors)
                t0 = time.perf_counter()
                status = runner._run_one(f, locus, report, run_tags)
                calls.append((f.name, status, time.perf_counter() - t0, len(report.errors) > n_err))
                state[2] = 0.0
            result = {
                "tags": [(t, vars(locus.provenance[t]) if t in locus.provenance else None)
                         for t in sorted(run_tags)],
                # every set_property() call left a provenance entry (the child's copy starts with none)
                "props": [(k[9:], locus.user_properties[k[9:]], vars(p)) for k, p in locus.provenance.items()
                          if k.startswith("property:") and k[9:] in locus.user_properties],
                "errors": [e.to_dict() for e in report.errors],
                "calls": calls,
            }
            conn.send(("locus", idx, result))
        conn.send(("done", batch_id))


# ---- the parent ----------------------------------------------------------------------------------
class _Child:
    def __init__(self, ctx, specs: list[FilterSpec], limits: SandboxLimits):
        self.tmpdir = tempfile.mkdtemp(prefix="albireo-filter-")
        self.state = ctx.RawArray("d", 3)
        #: per filter (priority order): 1 once the parent disabled it; the child skips it from then on.
        self.stopped = ctx.RawArray("b", len(specs))
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main,
                                args=(child_conn, self.state, self.stopped, specs, limits, self.tmpdir),
                                daemon=True, name="albireo-filter-sandbox")
        saved = {k: os.environ.get(k) for k in CHILD_ENV}
        os.environ.update(CHILD_ENV)
        try:
            self.proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child_conn.close()
        #: (locus index, set of filter names to skip) not yet answered.
        self.outstanding: dict[int, set[str]] = {}
        self.busy = False
        self.batch_id = 0
        self.info: dict[str, Any] = {}

    def wait_loaded(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        if not self.conn.poll(timeout_s):
            self.kill()
            raise RuntimeError(f"sandbox child did not start within {timeout_s:.0f}s")
        try:
            kind, errors, info = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"sandbox child died while loading filters (exit code {self.proc.exitcode})") from exc
        self.info = info
        return errors

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop",))
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the filter process died from {name}"
    return f"the filter process exited with code {exitcode}"


class SandboxPool:
    """Child processes hosting the sandboxed filters; :meth:`run` applies their effects to the loci."""

    def __init__(self, filters: list[LoadedFilter], limits: SandboxLimits | None = None,
                 policy: ErrorPolicy | None = None, metrics: Metrics | None = None):
        self.filters = sorted(filters, key=lambda f: f.priority)
        self.by_name = {f.name: f for f in self.filters}
        self.limits = limits or SandboxLimits()
        self.policy = policy or ErrorPolicy()
        self.metrics = metrics
        self.specs = [FilterSpec(f.name, f.revision, f.code, f.priority) for f in self.filters]
        self._ctx = mp.get_context("spawn")
        self.children: list[_Child] = []
        self.load_errors: dict[str, dict[str, Any]] = {}
        self.respawns = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SandboxPool:
        import atexit

        atexit.register(self.close)  # children and their tmp dirs go with the worker, however it stops
        for _ in range(max(1, self.limits.processes)):
            self.children.append(self._spawn(first=True))
        return self

    def _spawn(self, first: bool = False) -> _Child:
        child = _Child(self._ctx, self.specs, self.limits)
        errors = child.wait_loaded(self.limits.start_timeout_s)
        if first:
            for name, err in errors.items():
                if name in self.load_errors:
                    continue
                self.load_errors[name] = err
                f = self.by_name[name]
                f.enabled = False
                f.disabled_reason = f"failed to load: {err['message']}"
                log.error("filter %s@%s cannot run: %s", f.name, f.revision, err["message"])
        return child

    def close(self) -> None:
        for c in self.children:
            c.stop()
        self.children = []

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def network_namespace(self) -> bool:
        return bool(self.children) and all(c.info.get("network_namespace") for c in self.children)

    # -- running ----------------------------------------------------------------------------
    def run(self, loci: list[Locus], report: RunReport | None = None, names: set[str] | None = None) -> RunReport:
        """Run the enabled sandboxed filters (or those in ``names``) over ``loci``; effects applied in place."""
        report = report if report is not None else RunReport()
        active = {f.name for f in self.filters if f.enabled and (names is None or f.name in names)}
        if not active or not loci:
            return report
        if not self.children:
            self.start()
        for x in loci:
            report.tags_by_locus.setdefault(x.locus_id, set())
        bs = max(1, self.limits.batch_size)
        queue = [list(range(i, min(i + bs, len(loci)))) for i in range(0, len(loci), bs)]
        retries: dict[int, int] = {}
        for c in self.children:
            c.outstanding.clear()
            c.busy = False
        while queue or any(c.busy for c in self.children):
            for c in self.children:
                if not c.busy and queue:
                    self._send(c, loci, {i: set() for i in queue.pop(0)}, active)
            busy = [c for c in self.children if c.busy]
            ready = wait([c.conn for c in busy], timeout=0.05)
            for c in busy:
                if c.conn in ready:
                    self._drain(c, loci, report)
            for i, c in enumerate(self.children):
                if not c.busy:
                    continue
                started = c.state[2]
                overrun = started > 0 and time.monotonic() - started > self.limits.timeout_s + self.limits.grace_s
                if not overrun and not c.proc.is_alive():
                    self._drain(c, loci, report)  # what it sent before dying still counts
                    if not c.busy:
                        continue
                if overrun or not c.proc.is_alive():
                    self.children[i] = self._replace(c, loci, report, active, retries, killed=overrun)
        return report

    def _send(self, c: _Child, loci: list[Locus], items: dict[int, set[str]], active: set[str]) -> None:
        c.batch_id += 1
        c.outstanding = dict(items)
        c.busy = True
        c.state[2] = 0.0
        payload = [(i, pack_locus(loci[i]), sorted(skip)) for i, skip in items.items()]
        try:
            c.conn.send(("run", c.batch_id, payload, active))
        except (OSError, pickle.PicklingError, BrokenPipeError) as exc:
            log.error("could not send a batch to the sandbox: %s", exc)

    def _drain(self, c: _Child, loci: list[Locus], report: RunReport) -> None:
        while c.busy and c.conn.poll():
            try:
                msg = c.conn.recv()
            except (EOFError, OSError):
                return  # died: handled by the liveness check
            if msg[0] == "locus":
                _, idx, result = msg
                if idx in c.outstanding:
                    del c.outstanding[idx]
                    self._apply(loci[idx], result, report)
            elif msg[0] == "done" and msg[1] == c.batch_id:
                c.busy = False

    def _replace(self, c: _Child, loci: list[Locus], report: RunReport, active: set[str],
                 retries: dict[int, int], killed: bool) -> _Child:
        """A child hung or died: charge the running filter, start a new child, re-send the rest."""
        idx, fi, started = int(c.state[0]), int(c.state[1]), c.state[2]
        c.kill()
        exitcode = c.proc.exitcode
        self.respawns += 1
        if self.metrics is not None:
            self.metrics.inc("sandbox_respawns")
        remaining = dict(c.outstanding)
        if started > 0 and idx in remaining and 0 <= fi < len(self.filters):
            f = self.filters[fi]
            locus = loci[idx]
            if killed:
                exc, msg = "FilterTimeout", (f"exceeded its time budget of {self.limits.timeout_s:g}s "
                                            f"(stuck outside Python; process killed)")
                f.stats.timeouts += 1
            else:
                exc, msg = "FilterCrashed", _death_message(exitcode)
                f.stats.crashes += 1
            f.stats.observe(time.monotonic() - started)
            report.runs += 1
            err = FilterError(f.name, f.revision, locus.locus_id, locus.alert.id if locus.alerts else "", exc, msg,
                              f"{msg} while running {f.name}@{f.revision} on locus {locus.locus_id}", time.time())
            self.policy.record(f, err, report)
            remaining[idx] = remaining[idx] | {f.name}
        else:
            # Died between calls (e.g. unpickling): retry each locus a few times, then give up on it.
            for i in list(remaining):
                retries[i] = retries.get(i, 0) + 1
                if retries[i] > 2:
                    del remaining[i]
                    log.error("sandbox child keeps dying on locus %s; its user filters were not run",
                              loci[i].locus_id)
        log.warning("sandbox child %s (%s); starting a new one", "killed on timeout" if killed else
                    _death_message(exitcode), c.info.get("pid"))
        new = self._spawn()
        self._propagate_disables()
        active = {n for n in active if self.by_name[n].enabled}
        if remaining and active:
            self._send(new, loci, remaining, active)
        return new

    def _apply(self, locus: Locus, result: dict[str, Any], report: RunReport) -> None:
        run_tags = report.tags_by_locus.setdefault(locus.locus_id, set())
        tagged_by: set[str] = set()
        for tag, prov in result["tags"]:
            locus.user_tags.add(tag)
            run_tags.add(tag)
            if prov:
                locus.provenance.setdefault(tag, Provenance(**prov))
                tagged_by.add(prov["filter"])
        for key, value, prov in result["props"]:
            locus.user_properties[key] = value
            if prov:
                locus.provenance[f"property:{key}"] = Provenance(**prov)
        for name, status, dt, _ in result["calls"]:
            f = self.by_name.get(name)
            if f is None:
                continue
            if status == "skipped":
                f.stats.skipped += 1
                report.skipped += 1
                continue
            f.stats.observe(dt)
            report.runs += 1
            if status == "ok":
                self.policy.succeeded(f)
            if status == "timeout":
                f.stats.timeouts += 1
            if self.metrics is not None:
                self.metrics.observe("filter_seconds", dt, filter=name)
        for name in tagged_by:
            if name in self.by_name:
                self.by_name[name].stats.tagged += 1
        for e in result["errors"]:
            f = self.by_name.get(e["filter"])
            if f is not None:
                self.policy.record(f, FilterError(**e), report)
        self._propagate_disables()

    def _propagate_disables(self) -> None:
        """Tell every child which filters the parent has disabled, so a batch under way skips them."""
        for i, f in enumerate(self.filters):
            if not f.enabled:
                for c in self.children:
                    c.stopped[i] = 1
