"""The audit hook inside every filter child: the first, friendly "no" (the OS boundary is the real one).

An audit hook sees what Python code asks for (``open`` for writing, ``socket``, ``subprocess``) and
refuses it with a :class:`SandboxViolation` that says what the filter tried, which is the message a
filter author needs. It is not a security boundary: ``ctypes``, ``_posixsubprocess`` or rewriting the
hook's closure get around it, and then the kernel refuses instead (see
:mod:`broker.filtering.isolation`: the read-only root, seccomp, the unprivileged user, namespaces).
"""

from __future__ import annotations

import os
import sys
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown",
                "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

_PROCESS_EVENTS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "pty.spawn"}

_NET_EVENTS = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
               "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}


class SandboxViolation(PermissionError):
    """An operation the sandbox forbids (network, writing outside the private tmp dir, processes)."""


def install_guards(tmpdir: str) -> None:
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
        elif event in _NET_EVENTS:
            if event == "socket.__new__" and len(args) > 1 and args[1] == socket.AF_UNIX:
                return
            raise SandboxViolation(f"filters have no network access ({event})")

    sys.addaudithook(hook)
