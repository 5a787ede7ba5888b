"""The broker's PLAIN credential file: one ``NAME:pbkdf2-sha512:ITERATIONS:SALT:HASH`` line per user.

The broker's PLAIN handler (``services/kafka/PlainCredentialsFile.java``) re-reads the file when
it changes, so a user added, re-keyed or removed here can log in (or no longer) at once, without a
restart. Each change edits only its own user's line, under an exclusive lock, and replaces the file
by a rename: several ``albireo users`` (or test runs with their own user databases) sharing one
broker never drop each other's lines, and the broker never reads a half-written file.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

HEADER = "# NAME:pbkdf2-sha512:ITERATIONS:SALT:HASH, written by `albireo users`\n"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:
        if line.strip() and not line.startswith("#") and ":" in line:
            name, fields = line.split(":", 1)
            out[name] = fields
    return out


def _write(path: Path, users: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(HEADER + "".join(f"{n}:{f}\n" for n, f in sorted(users.items())))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def set_user(path: str | Path, name: str, verifier: str) -> None:
    """Add or replace ``name``'s line (``verifier`` from :func:`broker.access.secrets.plain_verifier`)."""
    path = Path(path)
    with _locked(path):
        users = _read(path)
        users[name] = verifier
        _write(path, users)


def remove_user(path: str | Path, name: str) -> bool:
    path = Path(path)
    with _locked(path):
        users = _read(path)
        if name not in users:
            return False
        del users[name]
        _write(path, users)
    return True


def verifier_of(path: str | Path, name: str) -> str | None:
    return _read(Path(path)).get(name)
