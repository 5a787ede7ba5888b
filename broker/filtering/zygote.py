"""The sandbox's own processes: a zygote that forks one isolated child per filter revision.

The worker starts ``python -I -m broker.filtering.zygote`` with a minimal environment (no token,
no ``ALBIREO_*`` setting, no credential of any kind) and a control socket. The zygote enters new
namespaces (see :mod:`broker.filtering.isolation`), builds the read-only root a filter sees,
imports the heavy libraries filters share (numpy, pandas, astropy, the devkit) once, and then
forks a child per filter on request. It never runs filter code itself.

Each child, before loading its filter's code, gets a pid namespace of its own (it is pid 1 and
sees no other process), its own network, IPC and UTS namespaces, a private ``/tmp`` and ``/proc``,
drops root (or every capability), sets its rlimits, ``no_new_privs`` and a seccomp filter, points
stdin/stdout/stderr at ``/dev/null`` and installs the audit hook that turns the common mistakes
into a friendly :class:`SandboxViolation`. Then it loads the filter and serves loci on its socket
with the data-only frames of :mod:`broker.filtering.wire`.

Process tree (``ns``: when namespaces are available)::

    worker ── zygote launcher (waits) ── zygote (pid 1 of the sandbox pid ns) ─┬─ filter A (pid 1 of its own ns)
                                                                               └─ filter B ...
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

import msgpack

from broker.filtering import isolation as iso

#: modules the zygote imports once so that children fork with them loaded (shared pages, fast start).
PREIMPORT = ("numpy", "pandas", "astropy.time", "astropy.table", "astropy.timeseries", "antares_devkit.models",
             "broker.locus", "broker.lightcurve", "broker.filtering.contract", "broker.filtering.wire")


# ---- the zygote ----------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    cfg = json.loads(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the sandbox stops
    ctl = socket.socket(fileno=cfg["ctl_fd"])
    facts: dict[str, Any] = {"mode": "none", "namespaces": [], "root": False, "user": None, "degraded": []}
    mode = "none"
    wanted = cfg.get("mode", "auto")
    if wanted != "none":
        flags = iso.CLONE_NEWNS | iso.CLONE_NEWPID | iso.CLONE_NEWNET | iso.CLONE_NEWIPC | iso.CLONE_NEWUTS
        try:
            if os.geteuid() == 0 and wanted == "auto":
                iso.unshare(flags)
                mode = "root"
            else:
                uid, gid = os.getuid(), os.getgid()
                iso.unshare(flags | iso.CLONE_NEWUSER)
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"0 {uid} 1")
                _write("/proc/self/gid_map", f"0 {gid} 1")
                mode = "userns"
        except OSError as exc:
            facts["degraded"].append(f"no namespaces: {exc.strerror or exc}")
    facts["mode"] = mode
    if mode != "none":
        facts["namespaces"] = ["mount", "pid", "network", "ipc", "uts"] + (["user"] if mode == "userns" else [])
        pid = os.fork()
        if pid:  # the launcher: stays the worker's child until the zygote ends
            ctl.close()
            _, status = os.waitpid(pid, 0)
            os._exit(min(255, abs(os.waitstatus_to_exitcode(status))))
        iso.prctl(iso.PR_SET_PDEATHSIG, signal.SIGKILL)
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        try:
            facts["tmp"] = iso.build_root(cfg["roots"], cfg.get("hide", []))["tmp"]
            facts["root"] = True
        except OSError as exc:
            facts["degraded"].append(f"no private root: {exc}")
    else:
        own_pid_ns = -1
    if cfg.get("uid") is not None and mode != "userns" and os.geteuid() == 0 and (
            facts["root"] or cfg.get("world_readable")):
        facts["user"] = {"uid": cfg["uid"], "gid": cfg["gid"], "name": iso.SANDBOX_USER}
    elif mode == "userns":
        facts["user"] = {"uid": os.getuid(), "name": "user namespace (capabilities dropped)"}
    else:
        facts["degraded"].append("filters run as the worker's user")
    for name in cfg.get("preimport", PREIMPORT):
        try:
            __import__(name)
        except Exception as exc:  # a missing optional library costs its importers time, nothing else
            facts["degraded"].append(f"preimport {name}: {type(exc).__name__}")
    import gc

    gc.freeze()  # children share the imported modules' pages instead of copying them on first touch
    _serve(ctl, cfg, facts, mode, own_pid_ns)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _send(ctl: socket.socket, msg: dict[str, Any]) -> None:
    try:
        ctl.send(msgpack.packb(msg, use_bin_type=True))
    except OSError:
        pass  # the worker went away: the next receive says so


def _serve(ctl: socket.socket, cfg: dict[str, Any], facts: dict[str, Any], mode: str, own_pid_ns: int) -> None:
    children: dict[int, int] = {}  # pid → child id
    _send(ctl, {"op": "ready", "facts": facts})
    while True:
        readable, _, _ = select.select([ctl], [], [], 0.05)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            cid = children.pop(pid, None)
            if cid is not None:
                _send(ctl, {"op": "exited", "id": cid, "status": os.waitstatus_to_exitcode(status)})
        if not readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 2)
        except OSError:
            data, fds = b"", []
        if not data:  # the worker is gone: so are its filters
            for pid in children:
                _kill(pid)
            os._exit(0)
        msg = msgpack.unpackb(data, raw=False)
        if msg["op"] == "spawn" and fds:
            pid = _fork_child(fds[0], ctl, cfg, facts, mode, own_pid_ns)
            os.close(fds[0])
            children[pid] = msg["id"]
            _send(ctl, {"op": "spawned", "id": msg["id"], "pid": pid})
        elif msg["op"] == "kill":
            for pid, cid in children.items():
                if cid == msg["id"]:
                    _kill(pid)
        elif msg["op"] == "stop":
            for pid in children:
                _kill(pid)
            os._exit(0)
        for fd in fds[1:]:
            os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _fork_child(fd: int, ctl: socket.socket, cfg: dict[str, Any], facts: dict[str, Any], mode: str,
                own_pid_ns: int) -> int:
    new_pid_ns = False
    if mode != "none":
        try:
            iso.unshare(iso.CLONE_NEWPID)
            new_pid_ns = True
        except OSError:
            pass
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.dup2(fd, 3)
            os.closerange(4, 1 << 16)
            ctl.detach()
            _filter_child(socket.socket(fileno=3), cfg, dict(facts, pid_namespace=new_pid_ns), mode)
            code = 0
        except BaseException:  # noqa: BLE001 - a child's setup failure must end the child, nothing else
            traceback.print_exc()
        os._exit(code)
    if new_pid_ns:
        iso.setns(own_pid_ns, iso.CLONE_NEWPID)  # the next child gets a namespace of its own again
    return pid


# ---- one filter's child --------------------------------------------------------------------------
def _enter_sandbox(limits: dict[str, Any], cfg: dict[str, Any], facts: dict[str, Any], mode: str) -> str:
    """Everything between the fork and the filter's first line; returns the private tmp directory."""
    import tempfile

    os.setsid()
    tmpdir = facts.get("tmp") or "/tmp"
    if mode != "none" and facts.get("root"):
        iso.unshare(iso.CLONE_NEWNS | iso.CLONE_NEWNET | iso.CLONE_NEWIPC | iso.CLONE_NEWUTS)
        iso.private_tmp(int(limits.get("tmp_mb", 256)), tmpdir)
        facts["proc"] = iso.private_proc()
    else:
        tmpdir = tempfile.mkdtemp(prefix="albireo-filter-")
    if mode == "root" or (mode == "none" and os.geteuid() == 0):
        # without a private root, the sandbox user can only run where the interpreter is readable by all
        if cfg.get("uid") is not None and (facts.get("root") or cfg.get("world_readable")):
            if mode == "none":
                os.chown(tmpdir, cfg["uid"], cfg["gid"])
            iso.become(cfg["uid"], cfg["gid"])
    elif mode == "userns":
        iso.drop_capabilities()
    os.environ["TMPDIR"] = os.environ["HOME"] = tmpdir
    tempfile.tempdir = tmpdir
    os.chdir(tmpdir)
    iso.apply_rlimits(int(limits.get("memory_mb") or 0), int(limits.get("cpu_s") or 0),
                      int(limits.get("threads") or 0), nofile=256, fsize_mb=int(limits.get("tmp_mb", 256)))
    facts["rlimits"] = ["AS", "CPU", "NPROC", "NOFILE", "FSIZE", "CORE"]
    iso.prctl(iso.PR_SET_DUMPABLE, 0)
    iso.no_new_privileges()
    try:
        facts["seccomp"] = iso.install_seccomp()
    except Exception as exc:  # no libseccomp here: said in the facts, the other boundaries hold
        facts["seccomp"] = None
        facts.setdefault("degraded", []).append(f"no seccomp: {type(exc).__name__}: {exc}")
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - filters print; the socket is the only output
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    return tmpdir


def _filter_child(sock: socket.socket, cfg: dict[str, Any], facts: dict[str, Any], mode: str) -> None:
    from broker.filtering import wire

    # the worker's shared memory for loci comes first, if it has one (sandbox.SharedLoci)
    body, fds = wire.read_frame_and_fds(sock)
    shared = None
    first = wire.decode_trusted(body) if body is not None else None
    if isinstance(first, dict) and first.get("t") == "shared" and fds:
        import mmap

        # read-only: the memory is sealed against writes, so a writable mapping would be refused anyway
        shared = memoryview(mmap.mmap(fds[0], int(first["size"]), mmap.MAP_SHARED, mmap.PROT_READ))
        # the mapping stays (Python's mmap keeps a duplicate descriptor, through which the seals refuse every write)
        os.close(fds[0])
        body = wire.read_frame_blocking(sock)
    else:
        for fd in fds:
            os.close(fd)
    if body is None:
        return
    load = wire.decode_trusted(body)
    limits = load["limits"]
    tmpdir = _enter_sandbox(limits, cfg, facts, mode)
    import logging

    logging.disable(logging.CRITICAL)  # everything a child knows reaches the parent in its results
    sys.dont_write_bytecode = True
    from broker.filtering.guards import install_guards

    install_guards(tmpdir)
    _serve_filter(sock, load, facts, shared)


def _reply(sock: socket.socket, msg: dict[str, Any]) -> None:
    from broker.filtering import wire

    sock.sendall(wire.pack_plain(msg))


CONSTRAINTS = ("REQUIRED_LOCUS_PROPERTIES", "REQUIRED_TAGS", "REQUIRED_ALERT_PROPERTIES", "TRIGGERING_SURVEY",
               "REQUIRED_GRAV_WAVE_PROB_REGION")


def _serve_filter(sock: socket.socket, load: dict[str, Any], facts: dict[str, Any],
                  shared: memoryview | None = None) -> None:
    from broker.filtering import wire
    from broker.filtering.contract import (
        FilterLoadError,
        declared_tags,
        find_filter_classes,
        instantiate,
        load_filter_module,
    )
    from broker.filtering.runner import FilterTimeout, time_budget
    from broker.locus import HaltPipeline, Provenance

    name, revision = load["name"], load["revision"]
    try:
        module = load_filter_module(load["code"], f"albireo_user_{name}_{revision}", f"<filter {name}@{revision}>")
        classes = find_filter_classes(module)
        if not classes:
            raise FilterLoadError("no filter class found (a class with _run() and OUTPUT_LOCUS_TAGS)")
        inst = instantiate(classes[0])
    except FilterLoadError as exc:
        _reply(sock, {"t": "loaded", "ok": False, "message": str(exc), "missing": exc.missing, "facts": facts})
        return
    constraints = {k: getattr(inst, k, None) for k in CONSTRAINTS}
    try:
        _reply(sock, {"t": "loaded", "ok": True, "tags": declared_tags(getattr(inst, "OUTPUT_LOCUS_TAGS", [])),
                      "constraints": constraints, "facts": facts})
    except TypeError as exc:
        _reply(sock, {"t": "loaded", "ok": False, "message": f"REQUIRED_* or OUTPUT_LOCUS_TAGS: {exc}",
                      "missing": None, "facts": facts})
        return
    timeout_s = float(load["limits"].get("timeout_s") or 0) or None
    while True:
        body = wire.read_frame_blocking(sock)
        if body is None:
            return
        msg = wire.decode_trusted(body)
        if msg.get("t") != "run":
            return
        static = msg.get("static")
        if static is None:  # in the shared memory: (offset, length)
            off, n = msg["at"]
            static = shared[off : off + n]
        locus = wire.decode_locus(static, msg["dynamic"])
        locus._single_use = True  # decoded for this one call (see Locus.timeseries)
        locus.provenance = {}
        locus._current = Provenance(name, revision, "", locus.alert.mjd if locus.alerts else None)
        locus._run_tags = set()
        status, error = "ok", None
        t0 = time.perf_counter()
        try:
            with time_budget(timeout_s):
                inst._run(locus)
        except HaltPipeline:  # locus.halt(): the parent stops the chain for this locus
            status = "halt"
        except FilterTimeout as exc:
            status, error = "timeout", {"exception": "FilterTimeout", "message": str(exc),
                                        "traceback": traceback.format_exc()}
        except BaseException as exc:  # the filter failed, whatever it raised
            status, error = "error", {"exception": type(exc).__name__, "message": str(exc),
                                      "traceback": traceback.format_exc()}
        dt = time.perf_counter() - t0
        tags = sorted(t for t in (locus._run_tags or ()) if isinstance(t, str))
        props = [[k[9:], locus.user_properties.get(k[9:])] for k in locus.provenance if isinstance(k, str)
                 and k.startswith("property:")]
        result = {"t": "result", "seq": msg["seq"], "status": status, "dt": dt, "tags": tags, "props": props,
                  "error": error}
        try:
            frame = wire.pack_plain(result)
        except Exception as exc:  # a value that is not plain data: the filter's error
            frame = wire.pack_plain(dict(result, props=[], status="error", error={
                "exception": type(exc).__name__, "message": f"a property value cannot be sent: {exc}",
                "traceback": ""}))
        sock.sendall(frame)


if __name__ == "__main__":
    main(sys.argv)
