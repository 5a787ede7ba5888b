"""User filters run here: one isolated child process per filter revision, fed loci as data.

Why processes, and one per filter: a filter that segfaults, calls ``os._exit``, leaks memory or
spins in C code can only be stopped, and the worker kept alive, if it runs in another process;
and a filter that monkey-patches a builtin or another filter's ``_run`` can only be kept from
hurting its neighbours if it has none in its interpreter. The children are forked from a zygote
(:mod:`broker.filtering.zygote`) that has the common libraries imported, so a child starts in
milliseconds plus its filter's own imports, and shares those pages.

What crosses between the worker and a child is data only (:mod:`broker.filtering.wire`): loci as
msgpack going in (written once per batch into sealed shared memory every child maps read-only,
:class:`SharedLoci`, so a locus is not copied through every filter's socket), and per locus a result
coming back: the tags and properties the call set, its
status, its duration and, if it failed, the exception's name, message and traceback. Nothing is
unpickled. The worker reads every frame with a deadline, checks it against what this child was
sent (the next locus in order, no other) and against what the filter may return
(:func:`~broker.filtering.contract.screen_effects`: declared tags only, JSON scalars of bounded
size), assigns the provenance itself, and charges the filter with every violation.

Filters run in priority order on each locus: a locus goes to a filter's child once every earlier
filter's result for it was applied (so a filter sees what earlier ones set), and different children
work on different loci at the same time.

What is enforced, and how: see ``docs/writing-filters.md`` ("Isolation: what is enforced").

* time: ``SIGALRM`` in the child interrupts a filter after ``timeout_s``; a child that does not
  answer within ``timeout_s + grace_s`` (stuck in C code, ignoring the alarm, not reading) is
  killed and the filter charged with a ``FilterTimeout`` for that locus;
* memory, CPU, processes, files: rlimits, seccomp, a private read-only root (see
  :mod:`broker.filtering.isolation`);
* death (segfault, ``os._exit``): the filter is charged (``FilterCrashed``) for the locus it was
  running, a new child takes over, the locus continues without that filter's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack

from broker.filtering import wire
from broker.filtering.contract import screen_effects, tag_problem
from broker.filtering.guards import SandboxViolation
from broker.filtering.runner import (
    ErrorPolicy,
    FilterError,
    LoadedFilter,
    RunReport,
    apply_effects,
    declared_tag_set,
    rejected_output_error,
    skip_if_blocked,
)
from broker.locus import Locus
from broker.metrics import Metrics

log = logging.getLogger("albireo.sandbox")

__all__ = ["CHILD_ENV", "FilterSpec", "SandboxLimits", "SandboxPool", "SandboxViolation", "sandbox_status"]

#: the whole environment of the sandbox: nothing of the worker's (tokens, ``ALBIREO_*``, credentials).
#: One thread per numeric library (``RLIMIT_AS`` counts every thread's stack, ``RLIMIT_NPROC`` every thread).
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "NUMBA_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin",
             "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp", "MPLBACKEND": "Agg"}


@dataclass
class FilterSpec:
    """A registered filter revision as the sandbox needs it."""

    name: str
    revision: str
    code: str
    priority: int = 100
    #: names of the filters that must run (successfully) on a locus before this one (``REQUIRES_FILTERS``).
    requires: tuple[str, ...] = ()


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0
    grace_s: float = 2.0
    memory_mb: int = 4096
    cpu_s: int = 3600
    #: loci sent ahead to one child (it works while the worker applies earlier results).
    batch_size: int = 64
    #: seconds a child may take to start and load its filter.
    start_timeout_s: float = 120.0
    #: size of each child's private /tmp (tmpfs), MiB; also its largest file.
    tmp_mb: int = 256
    #: ``RLIMIT_NPROC``: tasks (threads) of the sandbox user, a backstop behind seccomp's "no fork".
    threads: int = 512
    #: ``auto``: a dedicated user as root, a user namespace otherwise; ``userns``: a user namespace even as
    #: root; ``none``: no namespaces (what a kernel refusing them gives; tests of the degraded path).
    mode: str = "auto"
    #: shared memory for one batch's loci, MiB, which every child maps read-only (:class:`SharedLoci`);
    #: loci past it, or every locus with 0, go through each child's socket.
    shared_mb: int = 128

    @classmethod
    def from_config(cls, filters: Any, timeout_s: float | None = None) -> SandboxLimits:
        """The limits ``[filters]`` sets (``timeout_s``, ``memory_mb``, ``tmp_mb``, ``shared_mb``); ``timeout_s`` overrides the budget."""
        return cls(timeout_s=timeout_s or filters.timeout_s, memory_mb=filters.memory_mb,
                   tmp_mb=getattr(filters, "tmp_mb", cls.tmp_mb),
                   shared_mb=getattr(filters, "shared_mb", cls.shared_mb))

    def for_child(self) -> dict[str, Any]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "cpu_s": self.cpu_s,
                "tmp_mb": self.tmp_mb, "threads": self.threads}


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the filter process died from {name}"
    if exitcode is None:
        return "the filter process died"
    return f"the filter process exited with code {exitcode}"


# ---- one batch's loci, shared ----------------------------------------------------------------------
#: Linux 5.1's seal against every write but through mappings made before it (not in Python's fcntl).
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)


class SharedLoci:
    """One batch's locus frames, written once into sealed shared memory every filter child maps read-only.

    Why: a locus's frame (every alert with its properties: 53 KB on average for ``bench_e2e``'s
    loci, 78 alerts each) went through every sandboxed filter's socket, so ten filters cost ten copies into the
    kernel in the worker and more in each child. Here the worker writes a frame once and a child is
    sent its offset and length.

    Why a child cannot change what another reads: the memory is a memfd sealed against growing,
    shrinking and every future write (``F_SEAL_FUTURE_WRITE``, then ``F_SEAL_SEAL``) before any child
    is given it. The only writable mapping is the worker's own, made before the seals; a child's
    writable shared mapping, ``write(2)``, ``ftruncate`` or hole punch is refused by the kernel
    (tests/unit/test_filter_escapes.py tries each). A child can read every locus of the batch, not
    only those sent to it: alert data, which filters may read anyway.

    Each batch writes from the start again: between two batches no child has a locus in flight.
    """

    def __init__(self, size: int):
        self.fd = os.memfd_create("albireo-loci", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | F_SEAL_FUTURE_WRITE
                        | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.used = 0

    @classmethod
    def create(cls, size_mb: int) -> SharedLoci | None:
        """The shared memory, or None (``size_mb`` 0, or a kernel without sealed memfds: loci then go by socket)."""
        if size_mb <= 0:
            return None
        try:
            return cls(size_mb << 20)
        except (OSError, AttributeError, ValueError) as exc:
            log.warning("filter children get each locus by socket: no sealed shared memory here (%s)", exc)
            return None

    def reset(self) -> None:
        """A new batch: its frames overwrite the last batch's."""
        self.used = 0

    def put(self, frame: bytes) -> tuple[int, int] | None:
        """Write ``frame``; its (offset, length), or None when the batch has filled the memory."""
        n = len(frame)
        if self.used + n > self.size:
            return None
        off = self.used
        self.map[off : off + n] = frame
        self.used += n
        return off, n

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


# ---- the zygote, seen from the worker ------------------------------------------------------------
def _sandbox_config(limits: SandboxLimits) -> dict[str, Any]:
    from broker.filtering import isolation as iso

    roots = iso.read_only_roots()
    cfg: dict[str, Any] = {"mode": limits.mode, "roots": roots, "hide": _hidden_paths(),
                           "world_readable": all(iso.world_readable(r) for r in roots)}
    if limits.mode != "userns" and os.geteuid() == 0:
        user = iso.sandbox_user()
        if user is not None:
            cfg["uid"], cfg["gid"] = user
    return cfg


def _hidden_paths() -> list[str]:
    """The worker's data (store, index, outbox, portal data, service homes) if a read-only root holds them."""
    try:
        from broker.config import load_config

        cfg = load_config(env=dict(os.environ))
    except Exception:  # no readable configuration: the defaults are outside every root anyway
        return []
    paths = [cfg.store.path, cfg.search.path, cfg.search.outbox_path, cfg.web.data_dir, cfg.catalogs.root,
             cfg.services.home]
    return sorted({os.path.realpath(p) for p in paths if p and p != ":memory:"})


class _Zygote:
    """The sandbox's process factory (a child of the worker); speaks data-only messages on a socket."""

    def __init__(self, limits: SandboxLimits):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = _sandbox_config(limits)
        cfg["ctl_fd"] = theirs.fileno()
        self.proc = subprocess.Popen([sys.executable, "-I", "-m", "broker.filtering.zygote", json.dumps(cfg)],
                                     env=dict(CHILD_ENV), pass_fds=(theirs.fileno(),), start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        self.ctl = ours
        self.facts: dict[str, Any] = {}
        self.exits: dict[int, int] = {}
        self.pids: dict[int, int] = {}

    def _recv(self, timeout_s: float) -> dict[str, Any] | None:
        ready, _, _ = select.select([self.ctl], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        data = self.ctl.recv(1 << 16)
        if not data:
            raise RuntimeError(f"the sandbox zygote stopped (exit code {self.proc.poll()})")
        msg = wire.decode_untrusted(data)
        if not isinstance(msg, dict):
            raise RuntimeError("the sandbox zygote sent something that is not a message")
        if msg.get("op") == "exited":
            self.exits[int(msg["id"])] = int(msg["status"])
        elif msg.get("op") == "spawned":
            self.pids[int(msg["id"])] = int(msg["pid"])
        return msg

    def wait(self, op: str, timeout_s: float, cid: int | None = None) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            if cid is not None and op == "exited" and cid in self.exits:
                return {"op": "exited", "id": cid, "status": self.exits[cid]}
            msg = self._recv(deadline - time.monotonic())
            if msg is None:
                return None
            if msg.get("op") == op and (cid is None or msg.get("id") == cid):
                return msg

    def pump(self) -> None:
        """Read the exit notices that arrived (never blocks)."""
        while self._recv(0.0) is not None:
            pass

    def spawn(self, cid: int, sock: socket.socket) -> None:
        socket.send_fds(self.ctl, [msgpack.packb({"op": "spawn", "id": cid})], [sock.fileno()])

    def kill(self, cid: int) -> None:
        with contextlib.suppress(OSError):
            self.ctl.send(msgpack.packb({"op": "kill", "id": cid}))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ctl.send(msgpack.packb({"op": "stop"}))
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(3)
        self.ctl.close()


class _Child:
    """One filter's process, seen from the worker."""

    _ids = 0

    def __init__(self, zygote: _Zygote, f: LoadedFilter, limits: SandboxLimits, shared: SharedLoci | None = None):
        _Child._ids += 1
        self.id = _Child._ids
        self.zygote = zygote
        self.f = f
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        zygote.spawn(self.id, theirs)
        theirs.close()
        if shared is not None:  # first, on an empty socket (a few bytes: cannot block); the child maps it read-only
            socket.send_fds(ours, [wire.pack({"t": "shared", "size": shared.size})], [shared.fd])
        ours.setblocking(False)
        self.sock = ours
        self.reader = wire.FrameReader(ours)
        self.writer = wire.FrameWriter(ours)
        self.writer.queue(wire.pack({"t": "load", "name": f.name, "revision": f.revision, "code": f.code,
                                     "limits": limits.for_child()}))
        self.started = time.monotonic()
        self.loaded: dict[str, Any] | None = None
        #: (sequence number, locus index, time queued) sent and not yet answered, in order.
        self.inflight: deque = deque()
        self.head_since = 0.0
        self.seq = 0
        self.dead = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def kill(self) -> None:
        if not self.dead:
            self.dead = True
            self.zygote.kill(self.id)
            self.sock.close()

    def stop(self) -> None:
        if not self.dead:
            with contextlib.suppress(OSError):
                self.sock.setblocking(True)
                self.sock.settimeout(0.2)
                self.sock.sendall(wire.pack({"t": "stop"}))
            self.kill()

    def exit_status(self, timeout_s: float = 2.0) -> int | None:
        msg = self.zygote.wait("exited", timeout_s, cid=self.id)
        return None if msg is None else msg["status"]


def _validate_loaded(msg: Any) -> dict[str, Any]:
    """The child's load report, checked: declared tags and constraints are data of the expected shape."""
    if not isinstance(msg, dict) or msg.get("t") != "loaded":
        raise wire.WireError("the first message is not a load report")
    if not msg.get("ok"):
        message = msg.get("message")
        missing = msg.get("missing")
        return {"ok": False, "message": str(message)[:2000] if message else "failed to load",
                "missing": missing if isinstance(missing, str) else None}
    tags = msg.get("tags")
    if not isinstance(tags, list) or len(tags) > 1000:
        raise wire.WireError("declared tags are not a list")
    bad = [t for t in tags if tag_problem(t, {t} if isinstance(t, str) else set())]
    c = msg.get("constraints")
    if not isinstance(c, dict):
        raise wire.WireError("constraints are not a mapping")
    cons = _Constraints()
    for key in ("REQUIRED_LOCUS_PROPERTIES", "REQUIRED_TAGS", "REQUIRED_ALERT_PROPERTIES"):
        v = c.get(key) or []
        if not (isinstance(v, list) and len(v) <= 1000 and all(isinstance(x, str) for x in v)):
            raise wire.WireError(f"{key} is not a list of strings")
        setattr(cons, key, v)
    trig = c.get("TRIGGERING_SURVEY") or "all"
    gw = c.get("REQUIRED_GRAV_WAVE_PROB_REGION")
    if not isinstance(trig, str) or (gw is not None and not (isinstance(gw, (int, float)) and math.isfinite(gw))):
        raise wire.WireError("TRIGGERING_SURVEY or REQUIRED_GRAV_WAVE_PROB_REGION malformed")
    cons.TRIGGERING_SURVEY, cons.REQUIRED_GRAV_WAVE_PROB_REGION = trig, gw
    facts = msg.get("facts") if isinstance(msg.get("facts"), dict) else {}
    return {"ok": True, "tags": [t for t in tags if t not in bad], "bad_tags": bad, "constraints": cons,
            "facts": facts}


class _Constraints:
    """A filter's ``REQUIRED_*`` attributes as its child reported them: what the worker checks before sending."""

    REQUIRED_LOCUS_PROPERTIES: list[str] = []
    REQUIRED_TAGS: list[str] = []
    REQUIRED_ALERT_PROPERTIES: list[str] = []
    TRIGGERING_SURVEY = "all"
    REQUIRED_GRAV_WAVE_PROB_REGION = None


# ---- the pool ------------------------------------------------------------------------------------
class SandboxPool:
    """One isolated child per filter; :meth:`run` applies their checked effects to the loci."""

    def __init__(self, filters: list[LoadedFilter], limits: SandboxLimits | None = None,
                 policy: ErrorPolicy | None = None, metrics: Metrics | None = None):
        from broker.filtering.dependencies import order_filters

        self.filters = order_filters(filters)  # dependencies first, then priority, then name
        self.by_name = {f.name: f for f in self.filters}
        self.limits = limits or SandboxLimits()
        self.policy = policy or ErrorPolicy()
        self.metrics = metrics
        self.zygote: _Zygote | None = None
        self.children: dict[str, _Child] = {}
        self.constraints: dict[str, _Constraints] = {}
        self.load_errors: dict[str, dict[str, Any]] = {}
        self.respawns = 0
        #: what isolation holds (from the zygote and the first child): mechanism → detail.
        self.isolation: dict[str, Any] = {}
        #: one batch's loci, shared with every child (None: each locus goes by each child's socket).
        self.shared: SharedLoci | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SandboxPool:
        import atexit

        atexit.register(self.close)  # children go with the worker, however it stops
        self.shared = SharedLoci.create(self.limits.shared_mb)
        self.zygote = _Zygote(self.limits)
        ready = self.zygote.wait("ready", self.limits.start_timeout_s)
        if ready is None:
            self.close()
            raise RuntimeError(f"the filter sandbox did not start within {self.limits.start_timeout_s:.0f}s")
        self.isolation = dict(ready.get("facts") or {})
        self._start_children(self.filters, first=True)
        self._export_isolation()
        return self

    def _start_children(self, filters: list[LoadedFilter], first: bool = False) -> None:
        """Start a child for each of ``filters`` and wait (with a deadline) until each has loaded."""
        starting = {f.name: _Child(self.zygote, f, self.limits, self.shared) for f in filters}
        deadline = time.monotonic() + self.limits.start_timeout_s
        waiting = dict(starting)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                for name, c in waiting.items():
                    c.kill()
                    self._load_failed(self.by_name[name], f"did not load within {self.limits.start_timeout_s:.0f}s")
                break
            socks = list(waiting.values())
            r, w, _ = select.select(socks, [c for c in socks if c.writer.pending], [], min(left, 0.5))
            for c in w:
                c.writer.flush()
            for c in r:
                name = c.f.name
                try:
                    c.reader.fill()
                    frames = c.reader.frames()
                    if not frames and not c.reader.eof:
                        continue
                    if not frames:
                        status = c.exit_status()
                        raise wire.WireError(f"{_death_message(status)} while loading")
                    report = _validate_loaded(wire.decode_untrusted(frames[0]))
                except wire.WireError as exc:
                    c.kill()
                    del waiting[name]
                    self._load_failed(self.by_name[name], str(exc))
                    continue
                del waiting[name]
                if not report["ok"]:
                    c.kill()
                    self._load_failed(self.by_name[name], report["message"], report["missing"])
                    continue
                c.loaded = report
                f = self.by_name[name]
                f.output_locus_tags = list(report["tags"])
                self.constraints[name] = report["constraints"]
                self.children[name] = c
                if report["bad_tags"]:
                    log.warning("filter %s declares tags no stream can carry, refused: %s", name, report["bad_tags"])
                if first and not self.isolation.get("child"):
                    self.isolation["child"] = report["facts"]
        if first:
            self.zygote.pump()

    def _load_failed(self, f: LoadedFilter, message: str, missing: str | None = None) -> None:
        if f.name not in self.load_errors:
            self.load_errors[f.name] = {"message": message, "missing": missing}
        f.enabled = False
        f.disabled_reason = f"failed to load: {message}"
        log.error("filter %s@%s cannot run: %s", f.name, f.revision, message)

    def _export_isolation(self) -> None:
        if self.metrics is None:
            return
        for mechanism, on in isolation_summary(self.isolation).items():
            self.metrics.set("sandbox_isolation", int(on), mechanism=mechanism)

    def close(self) -> None:
        for c in self.children.values():
            c.stop()
        self.children = {}
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
        if self.shared is not None:
            self.shared.close()
            self.shared = None

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running ----------------------------------------------------------------------------
    def run(self, loci: list[Locus], report: RunReport | None = None, names: set[str] | None = None) -> RunReport:
        """Run the enabled sandboxed filters (or those in ``names``) over ``loci``; effects applied in place."""
        if report is None:  # a run of its own (not a part of the platform runner's chain)
            report = RunReport()
            for x in loci:
                x.halted_by = None
        chain = [f for f in self.filters if f.enabled and (names is None or f.name in names)]
        if not chain or not loci:
            return report
        if self.zygote is None:
            self.start()
            chain = [f for f in chain if f.enabled]
        for x in loci:
            report.tags_by_locus.setdefault(x.locus_id, set())
        _Batch(self, chain, loci, report).run()
        return report

    def _respawn(self, f: LoadedFilter) -> _Child | None:
        self.respawns += 1
        if self.metrics is not None:
            self.metrics.inc("sandbox_respawns")
        self.children.pop(f.name, None)
        self._start_children([f])
        return self.children.get(f.name)


class _Batch:
    """One :meth:`SandboxPool.run`: loci flow through the filters' children in priority order."""

    def __init__(self, pool: SandboxPool, chain: list[LoadedFilter], loci: list[Locus], report: RunReport):
        self.pool = pool
        self.chain = chain
        self.loci = loci
        self.report = report
        self.queues: list[deque] = [deque() for _ in chain]
        #: locus index → its frame: (offset, length) in the shared memory, or the bytes themselves.
        self.static: dict[int, tuple[int, int] | bytes] = {}
        self.shared = pool.shared
        if self.shared is not None:
            self.shared.reset()
        self.done = 0
        self.declared = {f.name: declared_tag_set(f) for f in chain}

    def run(self) -> None:
        for i in range(len(self.loci)):
            self._enter(i, 0)
        lim = self.pool.limits
        while self.done < len(self.loci):
            now = time.monotonic()
            active: list[tuple[int, _Child]] = []
            for k, f in enumerate(self.chain):
                c = self.pool.children.get(f.name)
                if not f.enabled:
                    self._drop_stage(k, c)
                    continue
                if (c is None or c.dead) and (self.queues[k] or (c is not None and c.inflight)):
                    t0 = time.monotonic()
                    c = self.pool._respawn(f)
                    self._pause(time.monotonic() - t0)  # waiting for it was nobody else's time
                    if c is None:  # it no longer loads: disabled by _load_failed
                        self._drop_stage(k, None)
                        continue
                if c is None:
                    continue
                while self.queues[k] and len(c.inflight) < max(1, lim.batch_size):
                    self._send(c, self.queues[k].popleft(), now)
                if c.inflight:
                    active.append((k, c))
            if not active:
                continue
            wait = min(c.head_since + lim.timeout_s + lim.grace_s for _, c in active) - now
            r, w, _ = select.select([c for _, c in active], [c for _, c in active if c.writer.pending], [],
                                    min(max(wait, 0.0), 0.5))
            for c in w:
                c.writer.flush()
            readable = set(r)
            for k, c in active:
                if c in readable:
                    self._read(k, c)
                if c.dead or not c.inflight:
                    continue
                if c.writer.broken:
                    self._crashed(k, c)
                elif time.monotonic() > c.head_since + lim.timeout_s + lim.grace_s:
                    self._charge(k, c, "FilterTimeout", f"exceeded its time budget of {lim.timeout_s:g}s (no "
                                 f"answer within {lim.timeout_s + lim.grace_s:g}s; process killed)", timeout=True)

    def _pause(self, seconds: float) -> None:
        """The worker was busy (starting a child) for ``seconds``: the other children's clocks stop too."""
        for f in self.chain:
            c = self.pool.children.get(f.name)
            if c is not None and c.inflight:
                c.head_since += seconds

    # -- moving loci along ------------------------------------------------------------------
    def _enter(self, i: int, k: int) -> None:
        """Locus ``i`` is ready for filter ``k`` (or past the last one); skip filters it does not satisfy."""
        from broker.filtering.contract import satisfies_constraints

        x = self.loci[i]
        while k < len(self.chain) and x.halted_by is None:
            f = self.chain[k]
            if not f.enabled:
                self.report.outcome(x.locus_id, f.name, "disabled")
            elif skip_if_blocked(f, x, self.report):
                pass  # a dependency did not run ok here: counted and recorded, not charged
            else:
                cons = self.pool.constraints.get(f.name)
                try:
                    ok = cons is not None and satisfies_constraints(cons, x)
                except Exception as exc:  # e.g. an unknown TRIGGERING_SURVEY: the filter's problem
                    err = FilterError(f.name, f.revision, x.locus_id, x.alert.id if x.alerts else "",
                                      type(exc).__name__, str(exc), f"checking the constraints: {exc!r}", time.time())
                    f.stats.observe(0.0)
                    self.report.runs += 1
                    self.report.outcome(x.locus_id, f.name, "error")
                    self.pool.policy.observe(f, 0.0, [err], self.report)
                    ok = False
                else:
                    if cons is not None and not ok:
                        f.stats.skipped += 1
                        self.report.skipped += 1
                        self.report.outcome(x.locus_id, f.name, "skipped")
                if ok:
                    self.queues[k].append(i)
                    return
            k += 1
        self.done += 1

    def _drop_stage(self, k: int, c: _Child | None) -> None:
        """Filter ``k`` was disabled: what waited for it moves on without it; its child stops."""
        pending = list(self.queues[k])
        self.queues[k].clear()
        if c is not None and c.inflight:
            pending = [i for _, i, _ in c.inflight] + pending
            c.inflight.clear()
            c.kill()
        for i in pending:
            self.report.outcome(self.loci[i].locus_id, self.chain[k].name, "disabled")
            self._enter(i, k + 1)

    def _send(self, c: _Child, i: int, now: float) -> None:
        x = self.loci[i]
        static = self.static.get(i)
        if static is None:
            frame = wire.encode_locus_static(x)
            at = self.shared.put(frame) if self.shared is not None else None
            static = self.static[i] = frame if at is None else at
        c.seq += 1
        if not c.inflight:
            c.head_since = now
        c.inflight.append((c.seq, i, now))
        run = {"t": "run", "seq": c.seq, "dynamic": wire.encode_locus_dynamic(x)}
        if isinstance(static, bytes):
            run["static"] = static
        else:
            run["at"] = static
        c.writer.queue(wire.pack(run))

    def _read(self, k: int, c: _Child) -> None:
        try:
            c.reader.fill()
            frames = c.reader.frames()
        except (wire.WireError, OSError) as exc:
            self._charge(k, c, "FilterProtocolError", f"the filter process sent an invalid frame: {exc}")
            return
        for body in frames:
            if c.dead or not c.f.enabled:
                return  # disabled by the result just applied: what follows is not counted
            try:
                self._result(k, c, wire.decode_untrusted(body))
            except wire.WireError as exc:
                self._charge(k, c, "FilterProtocolError", f"the filter process broke the protocol: {exc}")
                return
        if c.reader.eof and not c.dead:
            self._crashed(k, c)

    def _crashed(self, k: int, c: _Child) -> None:
        status = c.exit_status() if c.inflight else None
        c.f.stats.crashes += 1
        self._charge(k, c, "FilterCrashed", _death_message(status))

    # -- results ----------------------------------------------------------------------------
    def _result(self, k: int, c: _Child, msg: Any) -> None:
        f = c.f
        if not c.inflight:
            raise wire.WireError("a result arrived with no locus in flight")
        if not isinstance(msg, dict) or msg.get("t") != "result":
            raise wire.WireError("not a result")
        seq, i, queued = c.inflight[0]
        if msg.get("seq") != seq:
            raise wire.WireError(f"a result for sequence {msg.get('seq')!r} while {seq} was due (results come "
                                 "for the loci sent, in order)")
        status = msg.get("status")
        if status not in ("ok", "error", "timeout", "halt"):
            raise wire.WireError(f"unknown status {status!r}")
        c.inflight.popleft()
        now = time.monotonic()
        measured = max(0.0, now - max(queued, c.head_since))
        c.head_since = now
        reported = msg.get("dt")
        dt = min(float(reported), measured) if isinstance(reported, (int, float)) and math.isfinite(reported) \
            and reported >= 0 else measured
        x = self.loci[i]
        errors: list[FilterError] = []
        err = msg.get("error")
        if status == "halt":  # locus.halt(): no later filter runs on this locus
            x.halted_by = f.name
            self.report.halted[x.locus_id] = f.name
        elif status != "ok":
            err = err if isinstance(err, dict) else {}
            errors.append(FilterError(
                f.name, f.revision, x.locus_id, x.alert.id if x.alerts else "",
                _text(err.get("exception"), 200) or "FilterError", _text(err.get("message"), 4000),
                _text(err.get("traceback"), 65536), time.time()))
        tags, props, problems = screen_effects(msg.get("tags"), msg.get("props"), self.declared[f.name])
        if problems:
            errors.append(rejected_output_error(f, x, problems))
        apply_effects(f, x, tags, props, self.report.tags_by_locus.setdefault(x.locus_id, set()))
        outcome = {"ok": "ok", "halt": "halted", "timeout": "timeout"}.get(status, "error")
        self.report.outcome(x.locus_id, f.name, "error" if problems and outcome in ("ok", "halted") else outcome)
        f.stats.observe(dt)
        self.report.runs += 1
        if status == "timeout":
            f.stats.timeouts += 1
        if self.pool.metrics is not None:
            self.pool.metrics.observe("filter_seconds", dt, filter=f.name)
        if measured > self.pool.limits.timeout_s:
            f.stats.slow += 1
        self.pool.policy.observe(f, measured, errors, self.report)
        self._enter(i, k + 1)

    def _charge(self, k: int, c: _Child, exc: str, message: str, timeout: bool = False) -> None:
        """The child failed (hung, died, lied): charge its filter for the locus it owed, start over."""
        f = c.f
        c.kill()
        if not c.inflight:
            return
        _, i, queued = c.inflight.popleft()
        rest = [j for _, j, _ in c.inflight]
        c.inflight.clear()
        dt = max(0.0, time.monotonic() - max(queued, c.head_since))
        x = self.loci[i]
        self.report.outcome(x.locus_id, f.name, "timeout" if timeout else "crash")
        if timeout:
            f.stats.timeouts += 1
        f.stats.observe(dt)
        self.report.runs += 1
        err = FilterError(f.name, f.revision, x.locus_id, x.alert.id if x.alerts else "", exc, message,
                          f"{message} while running {f.name}@{f.revision} on locus {x.locus_id}", time.time())
        log.warning("sandboxed filter %s: %s (locus %s); starting a new process", f.name, message, x.locus_id)
        self.pool.policy.observe(f, dt, [err], self.report)
        for j in reversed(rest):
            self.queues[k].appendleft(j)
        self._enter(i, k + 1)


def _text(v: Any, limit: int) -> str:
    return v[:limit] if isinstance(v, str) else ""


# ---- what holds here ---------------------------------------------------------------------------
def isolation_summary(facts: dict[str, Any]) -> dict[str, bool]:
    """Mechanism → whether it holds, from a pool's :attr:`SandboxPool.isolation` facts."""
    child = facts.get("child") or {}
    ns = set(facts.get("namespaces") or [])
    out = {
        "process_per_filter": True,
        "data_only_wire": True,
        "unprivileged_user": bool(facts.get("user")),
        "user_namespace": "user" in ns,
        "mount_namespace": "mount" in ns and bool(facts.get("root")),
        "pid_namespace": "pid" in ns and bool(child.get("pid_namespace", True)),
        "network_namespace": "network" in ns,
        "private_proc": bool(child.get("proc")),
        "seccomp": bool(child.get("seccomp")),
        "rlimits": bool(child.get("rlimits")),
        "minimal_environment": True,
        "audit_hook": True,
    }
    if facts.get("mode") == "root":
        del out["user_namespace"]  # as root, a real unprivileged uid is the stronger boundary (and none is made)
    return out


def sandbox_status(limits: SandboxLimits | None = None) -> dict[str, Any]:
    """Start a sandbox with a trivial filter and report what isolation holds on this machine."""
    from broker.filtering.platform import loaded_from_spec

    code = ("from broker.filtering import BaseFilter\n\nclass Probe(BaseFilter):\n    OUTPUT_LOCUS_TAGS = []\n\n"
            "    def _run(self, locus):\n        pass\n")
    f = loaded_from_spec(FilterSpec("Probe", "probe", code, 0))
    t0 = time.perf_counter()
    with SandboxPool([f], limits or SandboxLimits()) as pool:
        started = time.perf_counter() - t0
        facts = dict(pool.isolation)
        errors = dict(pool.load_errors)
    summary = isolation_summary(facts)
    return {"holds": summary, "degraded": [k for k, v in summary.items() if not v] + list(facts.get("degraded", [])),
            "mode": facts.get("mode"), "user": facts.get("user"), "seccomp": (facts.get("child") or {}).get("seccomp"),
            "start_s": started, "load_errors": errors, "root": os.geteuid() == 0}
