"""A work queue in one SQLite file: the embedded stack's stand-in for Kafka topics (not Kafka).

Behind the same :class:`~broker.ports.Source` and :class:`~broker.ports.Sink` ports, for work that
several local processes share (reconstruction scans: ``albireo scan-worker`` run N times on one
machine). It is a *queue*, not a log: a message polled by one consumer is leased to it for
``lease_s`` seconds; :meth:`QueueSource.commit` marks it done; a message whose lease ran out (its
consumer died or stalled) is delivered again to whoever polls next. Consumers of one ``group``
share the messages; each group sees every message once (as Kafka consumer groups do).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

from broker.ports import Message, Sink, Source

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,
    headers TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages(topic, id);
CREATE TABLE IF NOT EXISTS deliveries (
    grp TEXT NOT NULL, id INTEGER NOT NULL, lease_until REAL NOT NULL, owner TEXT, done INTEGER NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (grp, id));
CREATE TABLE IF NOT EXISTS cursors (grp TEXT NOT NULL, topic TEXT NOT NULL, next_id INTEGER NOT NULL,
    PRIMARY KEY (grp, topic));
"""


def _connect(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


class QueueSink(Sink):
    """Appends messages: :meth:`publish` buffers, :meth:`flush` writes the buffer in one transaction."""

    def __init__(self, path: str | Path):
        self._db = _connect(str(path))
        self._lock = threading.Lock()
        self._pending: list[tuple] = []

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._pending.append((topic, key, value, json.dumps(headers or {}), time.time()))

    def flush(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT INTO messages (topic, key, value, headers, created) "
                                         "VALUES (?,?,?,?,?)", pending)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        self.flush()
        self._db.close()


class QueueSource(Source):
    """One consumer of ``group`` over ``topics``: leased delivery, redelivery after ``lease_s``."""

    def __init__(self, path: str | Path, group: str, topics: list[str], lease_s: float = 30.0):
        self._db = _connect(str(path))
        self.group, self.topics, self.lease_s = group, list(topics), float(lease_s)
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self._take(max_messages)
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _take(self, n: int) -> list[Message]:
        now = time.time()
        marks = ",".join("?" * len(self.topics))
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # expired leases first (a dead consumer's messages), then new messages in order
            rows = db.execute(
                f"SELECT m.id, m.topic, m.key, m.value, m.headers, m.created FROM deliveries d JOIN messages m "
                f"ON m.id = d.id WHERE d.grp=? AND d.done=0 AND d.lease_until < ? AND m.topic IN ({marks}) "
                f"ORDER BY m.id LIMIT ?", (self.group, now, *self.topics, n)).fetchall()
            if len(rows) < n:
                for topic in self.topics:
                    cur = db.execute("SELECT next_id FROM cursors WHERE grp=? AND topic=?",
                                     (self.group, topic)).fetchone()
                    start = cur[0] if cur else 0
                    new = db.execute("SELECT id, topic, key, value, headers, created FROM messages "
                                     "WHERE topic=? AND id>=? ORDER BY id LIMIT ?",
                                     (topic, start, n - len(rows))).fetchall()
                    if new:
                        db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?,?)",
                                   (self.group, topic, new[-1][0] + 1))
                        db.executemany("INSERT OR IGNORE INTO deliveries VALUES (?,?,?,?,0,0)",
                                       [(self.group, r[0], 0.0, None) for r in new])
                        rows += new
                    if len(rows) >= n:
                        break
            db.executemany("UPDATE deliveries SET lease_until=?, owner=?, attempts=attempts+1 WHERE grp=? AND id=?",
                           [(now + self.lease_s, self.owner, self.group, r[0]) for r in rows])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [Message(bytes(v), t, 0, int(i), bytes(k) if k is not None else None, int(c * 1000), json.loads(h))
                for i, t, k, v, h, c in rows]

    def commit(self, messages: list[Message]) -> None:
        if messages:
            self._db.executemany("UPDATE deliveries SET done=1 WHERE grp=? AND id=?",
                                 [(self.group, m.offset) for m in messages])

    def rewind(self, messages: list[Message]) -> None:
        """Give the messages back now (their lease ends), so the next poll delivers them again."""
        self._db.executemany("UPDATE deliveries SET lease_until=0 WHERE grp=? AND id=? AND owner=?",
                             [(self.group, m.offset, self.owner) for m in messages])

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages of each topic this group has not finished (never read, or read and not committed)."""
        out = {}
        for topic in self.topics:
            total = self._db.execute("SELECT COUNT(*) FROM messages WHERE topic=?", (topic,)).fetchone()[0]
            done = self._db.execute("SELECT COUNT(*) FROM deliveries d JOIN messages m ON m.id=d.id WHERE d.grp=? "
                                    "AND d.done=1 AND m.topic=?", (self.group, topic)).fetchone()[0]
            out[(topic, 0)] = total - done
        return out

    def close(self) -> None:
        self._db.close()
