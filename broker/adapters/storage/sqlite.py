"""The embedded store: one SQLite file, no server. The default for ``albireo demo``.

WAL mode lets the portal read while a worker writes. Several worker processes
may share the file (SQLite serialises writers); a production deployment uses
``CassandraStore`` instead.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from broker.adapters.storage.common import alert_from_row, alert_to_row, resolve_claims
from broker.alert import Alert
from broker.association import LocusPositions
from broker.jsonutil import dumps, dumps_flat, loads
from broker.locus import Locus, locus_from_record, locus_record
from broker.ports import CatalogConflict, DeadLetter, Output, Store

SCHEMA_VERSION = 2

#: version → what upgrading a store from the version before takes (run in order, once).
_MIGRATIONS = {
    2: ["ALTER TABLE dead_letters ADD COLUMN letter_key TEXT"],
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    origin TEXT NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,
    headers TEXT NOT NULL, recorded_at REAL NOT NULL, PRIMARY KEY (origin, seq));
CREATE INDEX IF NOT EXISTS outputs_recorded_at ON outputs(recorded_at);
CREATE TABLE IF NOT EXISTS loci (
    locus_id TEXT PRIMARY KEY,
    pixel INTEGER NOT NULL,
    ra REAL NOT NULL,
    dec REAL NOT NULL,
    record TEXT NOT NULL,
    newest_mjd REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS loci_pixel ON loci(pixel);
CREATE INDEX IF NOT EXISTS loci_newest ON loci(newest_mjd);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    locus_id TEXT NOT NULL,
    mjd REAL NOT NULL,
    survey INTEGER NOT NULL,
    ra REAL, dec REAL,
    passband TEXT, mag REAL, magerr REAL, maglim REAL,
    object_id TEXT,
    is_history INTEGER NOT NULL,
    properties TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_locus ON alerts(locus_id, mjd);
CREATE TABLE IF NOT EXISTS cutouts (
    alert_id TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (alert_id, kind)
);
CREATE TABLE IF NOT EXISTS locus_claims (
    locus_id TEXT PRIMARY KEY, pixel INTEGER NOT NULL, ra REAL NOT NULL, dec REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS locus_claims_pixel ON locus_claims(pixel);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL, source TEXT, reason TEXT, message TEXT,
    payload BLOB, headers TEXT, letter_key TEXT
);
CREATE TABLE IF NOT EXISTS notices (
    notice_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_by_event ON notices(event_id);
CREATE TABLE IF NOT EXISTS notice_skymaps (notice_id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mm_events (
    event_id TEXT PRIMARY KEY, event_mjd REAL, status TEXT, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mm_events_by_time ON mm_events(event_mjd);
CREATE TABLE IF NOT EXISTS mm_outgoing (
    event_id TEXT NOT NULL, record_number INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (event_id, record_number)
);
CREATE TABLE IF NOT EXISTS scans (
    scan_id TEXT PRIMARY KEY, status TEXT, created REAL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_by_created ON scans(created);
CREATE TABLE IF NOT EXISTS scan_pixels (
    scan_id TEXT NOT NULL, nside INTEGER NOT NULL, pixel INTEGER NOT NULL, llh REAL, e_in REAL, e_tot REAL,
    PRIMARY KEY (scan_id, nside, pixel)
);
CREATE TABLE IF NOT EXISTS catalog_records (
    event_id TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (event_id, version)
);
CREATE TABLE IF NOT EXISTS catalog_releases (version INTEGER PRIMARY KEY, record TEXT NOT NULL);
"""

#: created after the migrations (the column they index may be new).
_INDEXES = "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_key ON dead_letters(letter_key);"

_ALERT_COLUMNS = (
    "alert_id, locus_id, mjd, survey, ra, dec, passband, mag, magerr, maglim, object_id, is_history, properties"
)


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and x != x) else x


class SQLiteStore(Store):
    """Loci and alerts in one SQLite database file."""

    def __init__(self, path: str | Path, association_order: int):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.association_order = association_order
        #: recorded outputs older than this are dropped (only uncommitted input positions need them).
        self.outputs_ttl_s = 7 * 86400.0
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: store schema v{row[0]} is newer than this code (v{SCHEMA_VERSION})")
        elif row[0] < SCHEMA_VERSION:
            self._migrate(row[0])
        self._db.executescript(_INDEXES)

    def _migrate(self, version: int) -> None:
        """Bring a store written by older code up to :data:`SCHEMA_VERSION`, one step at a time."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS[v]:
                    self._db.execute(stmt)
            self._db.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- reads ---------------------------------------------------------------------------
    def locus_positions(self, pixels: Iterable[int]) -> LocusPositions:
        pix = sorted({int(p) for p in pixels if int(p) >= 0})
        if not pix:
            return LocusPositions.empty()
        ids, ra, dec, px = [], [], [], []
        with self._lock:
            for chunk in _chunks(pix, 900):
                marks = ",".join("?" * len(chunk))
                # A claim row stands for its locus only until the locus itself is stored (which
                # may then have moved to a pixel outside ``pixels``).
                q = (f"SELECT locus_id, ra, dec, pixel FROM loci WHERE pixel IN ({marks}) UNION ALL "
                     f"SELECT locus_id, ra, dec, pixel FROM locus_claims c WHERE pixel IN ({marks}) "
                     "AND NOT EXISTS (SELECT 1 FROM loci l WHERE l.locus_id = c.locus_id)")
                for lid, r, d, p in self._db.execute(q, chunk * 2):
                    ids.append(lid)
                    ra.append(r)
                    dec.append(d)
                    px.append(p)
        return LocusPositions(ids, np.array(ra, dtype=float), np.array(dec, dtype=float), np.array(px, dtype=np.int64))

    def load_loci(self, locus_ids: Iterable[str], with_alerts: bool = True) -> dict[str, Locus]:
        ids = list(dict.fromkeys(locus_ids))
        out: dict[str, Locus] = {}
        with self._lock:
            for chunk in _chunks(ids, 900):
                marks = ",".join("?" * len(chunk))
                recs = {
                    lid: loads(rec)
                    for lid, rec in self._db.execute(f"SELECT locus_id, record FROM loci WHERE locus_id IN ({marks})", chunk)
                }
                alerts: dict[str, list[Alert]] = {lid: [] for lid in recs}
                if with_alerts and recs:
                    q = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE locus_id IN ({marks}) ORDER BY mjd, alert_id"
                    for row in self._db.execute(q, chunk):
                        a = self._alert(row)
                        alerts[a.locus_id].append(a)
                for lid, rec in recs.items():
                    out[lid] = locus_from_record(rec, alerts[lid])
        return out

    def existing_alert_ids(self, alerts: Iterable[Alert]) -> set[str]:
        ids = list(dict.fromkeys(a.alert_id for a in alerts))  # one indexed IN query per 900 ids
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(ids, 900):
                q = f"SELECT alert_id FROM alerts WHERE alert_id IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in self._db.execute(q, chunk))
        return found

    def alerts_for_locus(self, locus_id: str) -> list[Alert]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE locus_id=? ORDER BY mjd, alert_id", (locus_id,)
            ).fetchall()
        return [self._alert(r) for r in rows]

    def cutouts(self, alert_id: str) -> dict[str, bytes]:
        with self._lock:
            rows = self._db.execute("SELECT kind, data FROM cutouts WHERE alert_id=?", (alert_id,)).fetchall()
        return {k: bytes(d) for k, d in rows}

    def iter_loci(self, batch_size: int = 500, since_mjd: float | None = None,
                  until_mjd: float | None = None) -> Iterator[list[Locus]]:
        lo = -np.inf if since_mjd is None else since_mjd
        hi = np.inf if until_mjd is None else until_mjd
        last = ""
        while True:
            with self._lock:
                ids = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT locus_id FROM loci WHERE locus_id > ? AND newest_mjd >= ? AND newest_mjd <= ? "
                        "ORDER BY locus_id LIMIT ?",
                        (last, lo, hi, batch_size),
                    )
                ]
            if not ids:
                return
            loci = self.load_loci(ids)
            yield [loci[i] for i in ids if i in loci]
            last = ids[-1]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, reason, message, payload, received_at, headers FROM dead_letters ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(s, r, m, bytes(p or b""), t, loads(h) or {}) for s, r, m, p, t, h in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("loci", "alerts", "dead_letters")
            }

    # -- writes --------------------------------------------------------------------------
    def save_batch(
        self, loci: list[Locus], new_alerts: list[Alert], cutouts: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        from broker.association import pixels_of

        now = time.time()
        if loci:
            pix = pixels_of(np.array([x.ra for x in loci]), np.array([x.dec for x in loci]), self.association_order)
        locus_rows = [
            (
                x.locus_id,
                int(p),
                x.ra,
                x.dec,
                dumps(locus_record(x)),
                x.internal_properties.get("newest_alert_observation_time"),
                now,
            )
            for x, p in zip(loci, pix if loci else [], strict=True)
        ]
        alert_rows = []
        for a in new_alerts:
            r = alert_to_row(a)
            alert_rows.append(
                (
                    r["alert_id"], r["locus_id"], r["mjd"], r["survey"], _nan_to_none(r["ra"]), _nan_to_none(r["dec"]),
                    r["passband"], _nan_to_none(r["mag"]), _nan_to_none(r["magerr"]), _nan_to_none(r["maglim"]),
                    r["object_id"], int(r["is_history"]), dumps_flat(r["properties"]),
                )
            )
        cut_rows = [(aid, k, v) for aid, stamps in (cutouts or {}).items() for k, v in stamps.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO loci VALUES (?,?,?,?,?,?,?) ON CONFLICT(locus_id) DO UPDATE SET "
                    "pixel=excluded.pixel, ra=excluded.ra, dec=excluded.dec, "
                    "record=excluded.record, newest_mjd=excluded.newest_mjd, updated_at=excluded.updated_at",
                    locus_rows,
                )
                self._db.executemany(
                    f"INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", alert_rows
                )
                self._db.executemany("INSERT OR IGNORE INTO cutouts VALUES (?,?,?)", cut_rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def claim_new_loci(self, candidates: Sequence[tuple[str, float, float]], radius_arcsec: float,
                       known: LocusPositions | None = None) -> dict[str, str]:
        """One ``BEGIN IMMEDIATE`` transaction is the lock: SQLite admits one writer at a time, so the
        re-check and the claim rows of two racing processes cannot interleave."""
        from broker.association import neighbour_block, pixels_of

        if not candidates:
            return {}
        ra = np.array([c[1] for c in candidates], dtype=float)
        dec = np.array([c[2] for c in candidates], dtype=float)
        pix = pixels_of(ra, dec, self.association_order)
        block = neighbour_block(pix, self.association_order)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = self.locus_positions(block[block >= 0].tolist())
                winners, to_write = resolve_claims(candidates, existing, self.association_order, radius_arcsec)
                self._db.executemany(
                    "INSERT OR IGNORE INTO locus_claims VALUES (?,?,?,?)",
                    [(candidates[i][0], int(pix[i]), float(ra[i]), float(dec[i])) for i in to_write],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return winners

    def record_outputs(self, by_origin: dict[str, list[Output]]) -> None:
        if not by_origin:
            return
        now = time.time()
        rows = [(origin, i, o.topic, o.key, o.value, dumps(o.headers), now)
                for origin, outs in by_origin.items() for i, o in enumerate(outs)]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM outputs WHERE origin=?", [(o,) for o in by_origin])
                self._db.executemany("INSERT INTO outputs VALUES (?,?,?,?,?,?,?)", rows)
                self._db.execute("DELETE FROM outputs WHERE recorded_at < ?", (now - self.outputs_ttl_s,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def recorded_outputs(self, origins: Iterable[str]) -> dict[str, list[Output]]:
        origins = list(dict.fromkeys(origins))
        out: dict[str, list[Output]] = {}
        with self._lock:
            for chunk in _chunks(origins, 500):
                q = ",".join("?" * len(chunk))
                for origin, topic, key, value, headers in self._db.execute(
                        f"SELECT origin, topic, key, value, headers FROM outputs WHERE origin IN ({q}) "
                        "ORDER BY origin, seq", chunk):
                    out.setdefault(origin, []).append(Output(topic, key, value, loads(headers), origin))
        return out

    def record_dead_letter(self, letter: DeadLetter) -> bool:
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO dead_letters (received_at, source, reason, message, payload, headers, letter_key) "
                "VALUES (?,?,?,?,?,?,?)",
                (letter.received_at, letter.source, letter.reason, letter.message, letter.payload,
                 dumps(letter.headers), letter.key),
            )
            return cur.rowcount == 1

    # -- filter registry -----------------------------------------------------------------
    def _filter_table(self) -> None:
        """Created on first use, so stores written before the registry existed need no migration."""
        if not getattr(self, "_filter_table_ok", False):
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS filter_revisions (name TEXT NOT NULL, revision TEXT NOT NULL, "
                "hash TEXT, code TEXT NOT NULL, author TEXT, created REAL, status TEXT NOT NULL, "
                "status_reason TEXT, status_changed REAL, priority INTEGER, meta TEXT, "
                "PRIMARY KEY (name, revision))")
            self._filter_table_ok = True

    def put_filter_revision(self, rec: dict) -> None:
        from broker.adapters.storage.common import FILTER_REVISION_FIELDS

        row = [rec.get(k) for k in FILTER_REVISION_FIELDS]
        row[-1] = dumps(rec.get("meta") or {})
        with self._lock:
            self._filter_table()
            self._db.execute(f"INSERT OR REPLACE INTO filter_revisions ({', '.join(FILTER_REVISION_FIELDS)}) "
                             f"VALUES ({','.join('?' * len(row))})", row)

    def list_filter_revisions(self, name: str | None = None) -> list[dict]:
        from broker.adapters.storage.common import FILTER_REVISION_FIELDS

        q = f"SELECT {', '.join(FILTER_REVISION_FIELDS)} FROM filter_revisions"
        with self._lock:
            self._filter_table()
            rows = (self._db.execute(q + " WHERE name=? ORDER BY created, revision", (name,)) if name is not None
                    else self._db.execute(q + " ORDER BY name, created, revision")).fetchall()
        out = []
        for r in rows:
            rec = dict(zip(FILTER_REVISION_FIELDS, r, strict=True))
            rec["meta"] = loads(rec["meta"]) if rec["meta"] else {}
            out.append(rec)
        return out

    def set_filter_status(self, name: str, revision: str, status: str, reason: str = "",
                          at: float | None = None) -> None:
        with self._lock:
            self._filter_table()
            cur = self._db.execute("UPDATE filter_revisions SET status=?, status_reason=?, status_changed=? "
                                   "WHERE name=? AND revision=?", (status, reason, at or time.time(), name, revision))
            if cur.rowcount == 0:
                raise KeyError(f"no filter revision {name}@{revision}")

    # -- backfill runs -----------------------------------------------------------------
    def locus_ids(self, since_mjd: float | None = None, until_mjd: float | None = None) -> list[str]:
        lo = -np.inf if since_mjd is None else since_mjd
        hi = np.inf if until_mjd is None else until_mjd
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT locus_id FROM loci WHERE newest_mjd >= ? AND newest_mjd <= ? ORDER BY locus_id", (lo, hi))]

    def _backfill_table(self) -> None:
        """Created on first use, so stores written before backfills wrote need no migration."""
        if not getattr(self, "_backfill_table_ok", False):
            self._db.execute("CREATE TABLE IF NOT EXISTS backfill_runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                             "started REAL, record TEXT NOT NULL)")
            self._backfill_table_ok = True

    def put_backfill_run(self, rec: dict) -> None:
        with self._lock:
            self._backfill_table()
            self._db.execute("INSERT OR REPLACE INTO backfill_runs VALUES (?,?,?,?)",
                             (rec["run_id"], rec["name"], rec.get("started"), dumps(rec)))

    def get_backfill_run(self, run_id: str) -> dict | None:
        with self._lock:
            self._backfill_table()
            row = self._db.execute("SELECT record FROM backfill_runs WHERE run_id=?", (run_id,)).fetchone()
        return loads(row[0]) if row else None

    def list_backfill_runs(self, name: str | None = None) -> list[dict]:
        q = "SELECT record FROM backfill_runs"
        with self._lock:
            self._backfill_table()
            rows = (self._db.execute(q + " WHERE name=? ORDER BY started, run_id", (name,)) if name is not None
                    else self._db.execute(q + " ORDER BY started, run_id")).fetchall()
        return [loads(r[0]) for r in rows]

    # -- multi-messenger notices and events ---------------------------------------------
    def put_notice(self, record: dict, skymap: bytes | None = None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO notices VALUES (?,?,?)",
                                 (record["notice_id"], record["event_id"], dumps(record)))
                if skymap is not None:
                    self._db.execute("INSERT OR REPLACE INTO notice_skymaps VALUES (?,?)",
                                     (record["notice_id"], skymap))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def notices(self, event_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM notices WHERE event_id=?", (event_id,)).fetchall()
        return sorted((loads(r[0]) for r in rows), key=lambda r: r.get("order_key") or [])

    def notice(self, notice_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM notices WHERE notice_id=?", (notice_id,)).fetchone()
        return loads(row[0]) if row else None

    def notice_skymap(self, notice_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM notice_skymaps WHERE notice_id=?", (notice_id,)).fetchone()
        return bytes(row[0]) if row else None

    def put_event(self, record: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO mm_events VALUES (?,?,?,?)",
                             (record["event_id"], record.get("event_mjd"), record.get("status"), dumps(record)))

    def event(self, event_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM mm_events WHERE event_id=?", (event_id,)).fetchone()
        return loads(row[0]) if row else None

    def events(self, since_mjd: float | None = None, until_mjd: float | None = None,
               status: str | None = None, limit: int = 10000) -> list[dict]:
        q = "SELECT record FROM mm_events WHERE event_mjd >= ? AND event_mjd <= ?"
        args: list = [-np.inf if since_mjd is None else since_mjd, np.inf if until_mjd is None else until_mjd]
        if status is not None:
            q += " AND status = ?"
            args.append(status)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY event_mjd, event_id LIMIT ?", (*args, limit)).fetchall()
        return [loads(r[0]) for r in rows]

    def put_outgoing(self, record: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO mm_outgoing VALUES (?,?,?)",
                             (record["event_id"], int(record["record_number"]), dumps(record)))

    def outgoing(self, event_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM mm_outgoing WHERE event_id=? ORDER BY record_number",
                                    (event_id,)).fetchall()
        return [loads(r[0]) for r in rows]

    def put_scan(self, record: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO scans VALUES (?,?,?,?)",
                             (record["scan_id"], record.get("status"), record.get("created"), dumps(record)))

    def scan(self, scan_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM scans WHERE scan_id=?", (scan_id,)).fetchone()
        return loads(row[0]) if row else None

    def scans(self, status: str | None = None, limit: int = 1000) -> list[dict]:
        q, args = "SELECT record FROM scans", []
        if status is not None:
            q, args = q + " WHERE status=?", [status]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY created DESC, scan_id LIMIT ?", (*args, int(limit))).fetchall()
        return [loads(r[0]) for r in rows]

    def put_scan_pixels(self, scan_id: str, nside: int, rows) -> None:
        arr = np.asarray(rows, dtype=float).reshape(-1, 4)
        vals = [(scan_id, int(nside), int(r[0]), *(_nan_to_none(float(x)) for x in r[1:])) for r in arr]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO scan_pixels VALUES (?,?,?,?,?,?)", vals)

    def scan_pixels(self, scan_id: str) -> dict:
        with self._lock:
            rows = self._db.execute("SELECT nside, pixel, llh, e_in, e_tot FROM scan_pixels WHERE scan_id=? "
                                    "ORDER BY nside, pixel", (scan_id,)).fetchall()
        out: dict[int, list] = {}
        for n, *vals in rows:
            out.setdefault(int(n), []).append([np.nan if v is None else float(v) for v in vals])
        return {n: np.array(v, dtype=float).reshape(-1, 4) for n, v in out.items()}
    # -- the FAIR event catalog: rows are inserted once, never updated -------------------------
    def _insert_once(self, table: str, key_cols: tuple[str, ...], key: tuple, record: dict) -> bool:
        text = dumps(record)
        where = " AND ".join(f"{c}=?" for c in key_cols)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(f"SELECT record FROM {table} WHERE {where}", key).fetchone()
                if row is None:
                    self._db.execute(f"INSERT INTO {table} ({', '.join(key_cols)}, record) "
                                     f"VALUES ({','.join('?' * (len(key) + 1))})", (*key, text))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is not None and row[0] != text:
            raise CatalogConflict(f"{table} {key} is already stored with other content (published versions are immutable)")
        return row is None

    def put_catalog_record(self, record: dict) -> bool:
        return self._insert_once("catalog_records", ("event_id", "version"),
                                 (record["event_id"], int(record["version"])), record)

    def catalog_records(self, event_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM catalog_records WHERE event_id=? ORDER BY version",
                                    (event_id,)).fetchall()
        return [loads(r[0]) for r in rows]

    def put_catalog_release(self, release: dict) -> bool:
        return self._insert_once("catalog_releases", ("version",), (int(release["version"]),), release)

    def catalog_releases(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM catalog_releases ORDER BY version").fetchall()
        return [loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _alert(row) -> Alert:
        keys = _ALERT_COLUMNS.split(", ")
        d = dict(zip(keys, row, strict=True))
        d["properties"] = loads(d["properties"])
        return alert_from_row(d)


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
