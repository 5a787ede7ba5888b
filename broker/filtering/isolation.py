"""Operating-system boundaries for filter processes: a user, namespaces, a file system, rlimits, seccomp.

Everything here runs in the sandbox's own processes (the zygote and the filter children of
:mod:`broker.filtering.zygote`), before any filter code is loaded. Each step is taken when the
kernel allows it and recorded otherwise, so that ``albireo filter sandbox`` and the
``sandbox_isolation`` metric say what actually holds:

* **user**: as root, children run as the dedicated system user ``albireo-sandbox`` (created like the
  Elasticsearch user of ``albireo services``): no root, no access to the worker's files or processes.
  Not root: a user namespace maps the worker's uid, which is what lets it create the namespaces below;
  the children then drop every capability.
* **namespaces**: mount (a new root holding only read-only copies of what Python needs: the
  interpreter, its libraries, the installed packages; the store, data directories, ``/root``, ``/home``
  and the worker's ``/tmp`` are not there), pid (a filter sees only itself; ``os.getppid()`` is 0),
  network (no interface but a loopback that is down), IPC and UTS.
* **rlimits**: address space, CPU seconds, processes/threads (``RLIMIT_NPROC``), open files, file size, no cores.
* **seccomp** (libseccomp through the ``pyseccomp`` binding, or the official ``seccomp`` module when
  installed): no ``execve``, no new processes (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``),
  no ``ptrace``, mounts, new namespaces, kernel keyrings, BPF, io_uring, module loading; sockets other
  than AF_UNIX are refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import resource
import subprocess
from pathlib import Path
from typing import Any

SANDBOX_USER = "albireo-sandbox"

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

#: syscall numbers not wrapped by glibc, per architecture.
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
                       ctypes.c_ulong(arg5)), f"prctl {option}")


def _syscall(name: str, *args: Any) -> int:
    nr = _SYSCALLS.get(platform.machine(), {}).get(name)
    if nr is None:
        raise OSError(errno.ENOSYS, f"{name}: unknown on {platform.machine()}")
    return _libc.syscall(ctypes.c_long(nr), *args)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall("pivot_root", new_root.encode(), put_old.encode()), "pivot_root")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """No capability left, in any set, and none that an ``execve`` could give back."""
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break  # past the last capability this kernel knows
            raise
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_syscall("capset", ctypes.byref(header), ctypes.byref(data)), "capset")


def no_new_privileges() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


# ---- the sandbox user ----------------------------------------------------------------------------
def sandbox_user(create: bool = True) -> tuple[int, int] | None:
    """(uid, gid) of the dedicated system user, created when missing and we are root; None otherwise."""
    import pwd

    try:
        pw = pwd.getpwnam(SANDBOX_USER)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        pass
    if not create or os.geteuid() != 0:
        return None
    nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    try:
        proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", nologin, "--user-group",
                               SANDBOX_USER], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode not in (0, 9):  # 9: created meanwhile by another worker
        return None
    try:
        pw = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def world_readable(path: str) -> bool:
    """Whether any user may read ``path`` (every directory on the way traversable by others)."""
    p = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(p).st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent


def become(uid: int, gid: int) -> None:
    """Drop root for good: no supplementary groups, real/effective/saved ids all the sandbox user's."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


# ---- the file system a filter sees ---------------------------------------------------------------
#: files of /etc that Python and the libraries filters use read (no secrets among them).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime", "timezone", "passwd", "group", "nsswitch.conf", "hosts",
             "mime.types", "os-release", "resolv.conf", "protocols", "services")
ETC_DIRS = ("ld.so.conf.d", "ssl/certs", "fonts", "alternatives")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
DEV_FILES = ("null", "zero", "full", "random", "urandom")
#: where the new root is assembled (inside our own mount namespace: nothing changes on the host).
_STAGING_CANDIDATES = ("/srv", "/media", "/opt", "/run", "/tmp")


def read_only_roots(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The directories a filter process needs to read: the interpreter, the packages, our code."""
    import sys

    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots = set(prefixes)
    # sys.path entries inside the interpreter's prefixes (stdlib, site-packages) and nothing else: a
    # working directory or a test runner's root on sys.path must not carry the worker's files along
    for p in sys.path:
        if p and os.path.isdir(p) and any(os.path.realpath(p).startswith(os.path.realpath(x) + "/")
                                           for x in prefixes):
            roots.add(p)
    import broker

    roots.add(os.path.dirname(os.path.abspath(broker.__file__)))
    try:
        import filters

        roots.update(os.path.abspath(p) for p in filters.__path__)
    except ImportError:
        pass
    roots.update(extra)
    roots = {os.path.realpath(r) for r in roots}
    out = sorted(r for r in roots if os.path.isdir(r) and not r.startswith(("/proc", "/sys", "/dev")))
    # keep only the outermost of nested roots
    kept: list[str] = []
    for r in out:
        if not any(r == k or r.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(r)
    return kept


def _bind(src: str, dst: str, is_dir: bool, device: bool = False) -> None:
    if is_dir:
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            open(dst, "a").close()  # noqa: SIM115 - a mount point
    mount(src, dst, None, MS_BIND | MS_REC)
    # a remount must keep the flags a user namespace may not clear (atime ones), so they are read first
    st = os.statvfs(dst).f_flag
    keep = (MS_NOEXEC if st & os.ST_NOEXEC else 0) | (MS_NOATIME if st & os.ST_NOATIME else 0) | (
        MS_NODIRATIME if st & os.ST_NODIRATIME else 0) | (MS_RELATIME if st & os.ST_RELATIME else 0)
    nodev = 0 if device else MS_NODEV  # /dev/null & co. are devices: the mount must allow them
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | nodev | keep)


def build_root(roots: list[str], hide: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Make a new root of read-only binds (``roots``, system libraries, a few /etc files) and enter it.

    Must run in a new mount namespace. ``hide`` paths that fall inside a bound tree are covered with
    an empty, read-only tmpfs (or /dev/null for a file). The old root is detached: nothing else of
    the host's file system stays reachable.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    staging = next((c for c in _STAGING_CANDIDATES if os.path.isdir(c) and not any(
        r == c or r.startswith(c + "/") for r in roots)), None)
    if staging is None:
        raise OSError(errno.ENOENT, "no directory to assemble the sandbox root in")
    mount("albireo-sandbox", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    new = staging
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), new + d)
        elif os.path.isdir(d):
            _bind(d, new + d, True)
    for name in ETC_FILES:
        src = "/etc/" + name
        if os.path.isfile(src):
            _bind(src, new + src, False)
    for name in ETC_DIRS:
        src = "/etc/" + name
        if os.path.isdir(src):
            _bind(os.path.realpath(src), new + src, True)
    for r in roots:
        if any(r == s or r.startswith(s + "/") for s in SYSTEM_DIRS if not os.path.islink(s)):
            continue  # already inside a bound system directory
        _bind(r, new + r, True)
    for h in hide:
        h = os.path.realpath(h)
        target = new + h
        if not os.path.exists(target):
            continue
        if os.path.isdir(target):
            mount("hidden", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        else:
            mount("/dev/null", target, None, MS_BIND)
    os.makedirs(new + "/dev", exist_ok=True)
    for name in DEV_FILES:
        _bind("/dev/" + name, f"{new}/dev/{name}", False, device=True)
    # a filter's private tmp is /tmp, unless the interpreter itself lives there (a checkout in /tmp)
    tmp = "/tmp" if not any(r == "/tmp" or r.startswith("/tmp/") for r in roots) else "/albireo-tmp"
    for d in ("/proc", tmp, "/dev/shm", "/.old"):
        os.makedirs(new + d, exist_ok=True)
    # the sandbox's own /proc (this pid namespace's), mounted while the host's is still visible: a user
    # namespace may mount a proc only where a full one is already mounted; each child covers it with its own
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    pivot_root(".", ".old")
    os.chdir("/")
    umount2("/.old", MNT_DETACH)
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    return {"root": "private", "read_only": roots, "tmp": tmp}


def private_tmp(size_mb: int, path: str = "/tmp") -> None:
    """A fresh tmpfs at ``path`` (and /dev/shm) for one filter, bounded; it vanishes with the process."""
    opts = f"size={max(1, int(size_mb))}m,mode=1777"
    mount("albireo-tmp", path, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    mount("albireo-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=1777")


def private_proc() -> bool:
    """A /proc for this pid namespace: the filter sees itself only."""
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return True
    except OSError:
        return False


# ---- limits --------------------------------------------------------------------------------------
def apply_rlimits(memory_mb: int, cpu_s: int, nproc: int, nofile: int = 256, fsize_mb: int = 0) -> None:
    def lim(kind: int, value: int) -> None:
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))

    if memory_mb:
        lim(resource.RLIMIT_AS, int(memory_mb) * 1024 * 1024)
    if cpu_s:
        soft = int(cpu_s)
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5 if hard == resource.RLIM_INFINITY else hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc:
        lim(resource.RLIMIT_NPROC, int(nproc))
    lim(resource.RLIMIT_NOFILE, int(nofile))
    if fsize_mb:
        lim(resource.RLIMIT_FSIZE, int(fsize_mb) * 1024 * 1024)


#: syscalls a filter never needs: refused with EPERM.
DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "iopl",
    "ioperm", "acct", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "open_by_handle_at",
    "name_to_handle_at", "quotactl", "kcmp", "lookup_dcookie", "fanotify_init", "personality", "mknod",
    "mknodat", "pidfd_getfd", "pidfd_open", "syslog", "vhangup",
)


def _seccomp_module() -> Any:
    try:
        import seccomp  # libseccomp's own binding, when the distribution installed it

        return seccomp
    except ImportError:
        pass
    import pyseccomp  # ctypes over libseccomp.so.2, API-compatible with libseccomp's binding

    return pyseccomp


def install_seccomp() -> str:
    """Load the filter's seccomp policy (allow by default, refuse :data:`DENIED_SYSCALLS`); returns the binding."""
    sc = _seccomp_module()
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(deny, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a syscall on this architecture
    # clone() creating a process (no CLONE_THREAD); threads stay possible (bounded by RLIMIT_NPROC)
    f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes libc fall back to clone()
    try:
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    except (RuntimeError, ValueError, OSError):
        pass
    f.add_rule(deny, "socket", sc.Arg(0, sc.NE, 1))  # AF_UNIX only
    f.load()
    return sc.__name__
