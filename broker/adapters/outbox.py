"""A durable outbox between the store and the search index.

Why: the store is the source of truth and the index is derived from it. Writing locus documents
straight to Elasticsearch would lose them whenever the index is down or slow; writing them first
to a local SQLite file (committed in the same batch step as the store write) and *draining* that
file to the index means an outage only delays documents. The drainer backs off while the index is
unreachable and resumes where it stopped.

Entries are keyed by locus id: a newer document for the same locus replaces the queued one (the
index only needs the latest). Each entry carries a sequence number; an entry is deleted after
indexing only if its sequence did not change meanwhile, so a document queued *during* a drain is
never lost. Documents the index refuses for good (``DocumentsRejected``) move to a ``rejected``
table with the reason instead of blocking the queue.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from broker.adapters.search.query import DocumentsRejected
from broker.jsonutil import dumps, loads
from broker.ports import Index, IndexWriter

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    locus_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, doc TEXT NOT NULL, queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox(seq);
CREATE TABLE IF NOT EXISTS rejected (
    locus_id TEXT PRIMARY KEY, doc TEXT NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL
);
"""


class Outbox:
    """Documents waiting to reach the index, in one SQLite file (one per worker)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged put survives a power cut
        self._db.executescript(_SCHEMA)

    def put(self, docs: list[dict[str, Any]]) -> None:
        """Queue documents (replacing any queued document of the same locus or event).

        Event documents (``doc_type == "event"``) share the queue under the key ``event:<id>``.
        """
        if not docs:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                base = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
                self._db.executemany(
                    "INSERT INTO outbox VALUES (?,?,?,?) ON CONFLICT(locus_id) DO UPDATE SET "
                    "seq=excluded.seq, doc=excluded.doc, queued_at=excluded.queued_at",
                    [(_key(d), base + i + 1, dumps(d), now) for i, d in enumerate(docs)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def rejected(self) -> dict[str, str]:
        """Locus id → why the index refused its document."""
        with self._lock:
            return dict(self._db.execute("SELECT locus_id, reason FROM rejected ORDER BY locus_id"))

    def drain_once(self, index: Index, batch_size: int = 500) -> int:
        """Send the oldest ``batch_size`` documents; returns how many left the outbox.

        Index errors other than per-document rejections propagate; nothing is dequeued then.
        """
        with self._lock:
            rows = self._db.execute("SELECT locus_id, seq, doc FROM outbox ORDER BY seq LIMIT ?",
                                    (batch_size,)).fetchall()
        if not rows:
            return 0
        docs = [loads(doc) for _, _, doc in rows]
        rejected: dict[str, str] = {}
        loci = [d for d in docs if d.get("doc_type") != "event"]
        events = [d for d in docs if d.get("doc_type") == "event"]
        if loci:
            try:
                index.upsert(loci)
            except DocumentsRejected as exc:
                rejected.update(exc.rejected)
        if events:
            try:
                index.upsert_events(events)
            except DocumentsRejected as exc:
                rejected.update({f"event:{k}": v for k, v in exc.rejected.items()})
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO rejected VALUES (?,?,?,?)",
                    [(lid, doc, rejected[lid], now) for lid, _, doc in rows if lid in rejected],
                )
                cur = self._db.executemany("DELETE FROM outbox WHERE locus_id=? AND seq=?",
                                           [(lid, seq) for lid, seq, _ in rows])
                removed = cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if rejected:
            log.warning("index rejected %d document(s), kept in %s:rejected: %s", len(rejected), self.path,
                        next(iter(rejected.items())))
        return removed

    def drain(self, index: Index, batch_size: int = 500) -> int:
        """Drain until empty (errors propagate); returns documents delivered."""
        total = 0
        while True:
            n = self.drain_once(index, batch_size)
            if n == 0 and self.pending() == 0:
                return total
            total += n

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _key(doc: dict[str, Any]) -> str:
    return f"event:{doc['event_id']}" if doc.get("doc_type") == "event" else doc["locus_id"]


class OutboxDrainer:
    """A background thread that drains an :class:`Outbox` into an index, backing off on outages.

    Backoff doubles from ``min_backoff_s`` to ``max_backoff_s`` (with jitter, so many workers do
    not hammer a recovering cluster in step) and resets after the first success.
    """

    def __init__(self, outbox: Outbox, index: Index, batch_size: int = 500, idle_s: float = 0.2,
                 min_backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self.outbox, self.index = outbox, index
        self.batch_size, self.idle_s = batch_size, idle_s
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.delivered = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxDrainer:
        self._thread = threading.Thread(target=self._run, name="outbox-drainer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        backoff = self.min_backoff_s
        while not self._stop.is_set():
            try:
                n = self.outbox.drain_once(self.index, self.batch_size)
            except Exception as exc:  # noqa: BLE001 - any index failure means "retry later"
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox drain failed (%s); retrying in %.1fs", self.last_error, backoff)
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = self.min_backoff_s
            self.delivered += n
            if n == 0:
                self._stop.wait(self.idle_s)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.pending() == 0:
                return True
            time.sleep(0.1)
        return self.outbox.pending() == 0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class OutboxIndexWriter(IndexWriter):
    """What the pipeline calls: queue each batch's locus documents, drain them in the background.

    ``write`` returns as soon as the documents are durable in the outbox; the
    drainer thread delivers them to the index. ``close`` waits (bounded) for the
    queue to empty, so a finite run (``albireo demo``) ends with a complete index.
    """

    def __init__(self, index: Index, outbox_path: str | Path, background: bool = True):
        self.index = index
        self.outbox = Outbox(outbox_path)
        self.drainer = OutboxDrainer(self.outbox, index).start() if background else None
        self._closed: bool | None = None

    def write(self, loci: list) -> None:
        from broker.adapters.search.document import locus_document

        self.outbox.put([locus_document(x) for x in loci])
        if self.drainer is None:
            self.outbox.drain(self.index)

    def write_events(self, events: list[dict[str, Any]]) -> None:
        from broker.adapters.search.document import event_document

        self.outbox.put([event_document(e) for e in events])
        if self.drainer is None:
            self.outbox.drain(self.index)

    def close(self, timeout: float = 120.0) -> bool:
        """Drain what is queued (up to ``timeout`` s), stop the thread; True if nothing is left.

        Idempotent: a second call returns the first call's answer. The index itself stays open
        (whoever opened it closes it).
        """
        if self._closed is not None:
            return self._closed
        done = True
        if self.drainer is not None:
            done = self.drainer.flush(timeout)
            self.drainer.stop()
        else:
            self.outbox.drain(self.index)
        self.index.refresh()
        self.outbox.close()
        self._closed = done
        return done
