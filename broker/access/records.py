"""The user records: roles, hashed API keys, stream grants, in one SQLite file (``[users] db``).

Why a file of its own rather than the loci store: users are few and change rarely, the records
must exist before any store does (the first admin is made on a fresh install), and the web server
reads them on every write request, so a small local database is the simplest thing that is
durable and safe under concurrent writers (WAL, one transaction per change). A deployment with
several portal hosts points ``users.db`` at one shared path.

What is *not* here: passwords. Kafka passwords are shown once and live only in the broker (SCRAM)
and in the broker's PLAIN file as PBKDF2 hashes; API keys are kept as scrypt hashes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, created_at REAL NOT NULL, groups TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE, stream TEXT NOT NULL,
    granted_at REAL NOT NULL, granted_by TEXT NOT NULL DEFAULT '', PRIMARY KEY (user, stream));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class KeyRecord:
    key_id: str
    user: str
    label: str
    hash: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass
class UserRecord:
    name: str
    role: str
    created_at: float
    #: consumer groups granted beyond the ``<name>`` prefix every user has.
    groups: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    keys: list[KeyRecord] = field(default_factory=list)


class UserRecords:
    """CRUD over the users database; every method opens, commits and closes its own connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()
        self.path.chmod(0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # ---- users -----------------------------------------------------------------------------
    def add_user(self, name: str, role: str, groups: list[str]) -> UserRecord:
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO users (name, role, created_at, groups) VALUES (?, ?, ?, ?)",
                       (name, role, now, json.dumps(sorted(set(groups)))))
        return UserRecord(name, role, now, sorted(set(groups)))

    def set_groups(self, name: str, groups: list[str]) -> None:
        with self._db() as db:
            db.execute("UPDATE users SET groups = ? WHERE name = ?", (json.dumps(sorted(set(groups))), name))

    def remove_user(self, name: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def get(self, name: str) -> UserRecord | None:
        found = self.all(name)
        return found[0] if found else None

    def all(self, name: str | None = None) -> list[UserRecord]:
        where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        with self._db() as db:
            users = [UserRecord(n, r, c, json.loads(g))
                     for n, r, c, g in db.execute(f"SELECT name, role, created_at, groups FROM users {where} "
                                                  "ORDER BY name", args)]
            by_name = {u.name: u for u in users}
            for user, stream in db.execute("SELECT user, stream FROM grants ORDER BY stream"):
                if user in by_name:
                    by_name[user].grants.append(stream)
            for row in db.execute("SELECT key_id, user, label, hash, created_at, revoked_at FROM api_keys "
                                  "ORDER BY created_at"):
                if row[1] in by_name:
                    by_name[row[1]].keys.append(KeyRecord(*row))
        return users

    # ---- grants ----------------------------------------------------------------------------
    def grant(self, name: str, streams: list[str], by: str) -> list[str]:
        """Record grants; returns the streams that were not granted before."""
        now, new = time.time(), []
        with self._db() as db:
            for s in streams:
                cur = db.execute("INSERT OR IGNORE INTO grants (user, stream, granted_at, granted_by) "
                                 "VALUES (?, ?, ?, ?)", (name, s, now, by))
                if cur.rowcount:
                    new.append(s)
        return new

    def revoke(self, name: str, streams: list[str]) -> list[str]:
        gone = []
        with self._db() as db:
            for s in streams:
                if db.execute("DELETE FROM grants WHERE user = ? AND stream = ?", (name, s)).rowcount:
                    gone.append(s)
        return gone

    # ---- API keys --------------------------------------------------------------------------
    def add_key(self, key_id: str, name: str, label: str, hashed: str) -> KeyRecord:
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO api_keys (key_id, user, label, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                       (key_id, name, label, hashed, now))
        return KeyRecord(key_id, name, label, hashed, now, None)

    def key(self, key_id: str) -> KeyRecord | None:
        with self._db() as db:
            row = db.execute("SELECT key_id, user, label, hash, created_at, revoked_at FROM api_keys "
                             "WHERE key_id = ?", (key_id,)).fetchone()
        return KeyRecord(*row) if row else None

    def revoke_key(self, key_id: str) -> KeyRecord | None:
        with self._db() as db:
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                       (time.time(), key_id))
        return self.key(key_id)

    # ---- the portal's session secret -------------------------------------------------------
    def session_secret(self) -> str:
        """A random key made once and kept here, so every portal process signs sessions alike."""
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'session_secret'").fetchone()
            if row:
                return row[0]
            value = secrets.token_urlsafe(48)
            db.execute("INSERT INTO meta (key, value) VALUES ('session_secret', ?)", (value,))
            return value
