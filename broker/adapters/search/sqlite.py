"""The embedded index: locus documents in one SQLite file, searchable without a server.

Why these shapes:

* **cone search** — each document keeps its HEALPix nested pixel at :data:`PIXEL_ORDER` (~3"
  pixels); a cone becomes a few pixel *ranges* (``sky.cone_pixel_ranges``) answered by the pixel
  index, then the exact great-circle distance (a registered SQL function) decides;
* **tags** — a ``(tag, locus_id)`` side table, so "all loci with tag X" is an index range;
* **properties** — ``json_extract`` on the stored document (the newest-alert time, the default
  sort, has its own indexed column);
* **pagination** — keyset (``search_after``): the cursor is ``[sort value, locus_id]`` and the
  next page starts strictly after it, so deep pages cost what the first one does.

Raw Elasticsearch bodies (``LocusQuery.raw``, what antares-client sends) are evaluated by
:mod:`broker.adapters.search.dsl`: each clause one SQL condition on the stored document, the
answer Elasticsearch gives (``tests/contract``); what it does not support is a :class:`QueryError`.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from broker.adapters.search import dsl
from broker.adapters.search import query as q
from broker.adapters.search.sky import angular_distance_deg, cone_pixel_ranges
from broker.jsonutil import dumps, loads, strict
from broker.ports import EventQuery, Index, IndexSummary, LocusQuery, SearchResult

PIXEL_ORDER = q.PIXEL_ORDER
_NEWEST = "newest_alert_observation_time"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    locus_id TEXT PRIMARY KEY,
    pixel INTEGER NOT NULL,
    ra REAL NOT NULL,
    dec REAL NOT NULL,
    newest REAL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_pixel ON docs(pixel);
CREATE INDEX IF NOT EXISTS docs_newest ON docs(newest, locus_id);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT NOT NULL, locus_id TEXT NOT NULL, PRIMARY KEY (tag, locus_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_locus ON tags(locus_id);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, event_mjd REAL, messenger TEXT, status TEXT, test INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(event_mjd, event_id);
"""
#: the events a document lists (``events``; documents written before it existed list only GW ones).
_EVENTS_JSON = ("json_each(COALESCE(json_extract(docs.doc, '$.events'), json_extract(docs.doc, '$.grav_wave_events'), "
                "'[]'))")


def _ang_dist(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    return float(angular_distance_deg(ra1, dec1, ra2, dec2))


class SQLiteIndex(Index):
    """Locus documents in SQLite; the structured :class:`LocusQuery` subset of the Elasticsearch index."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.create_function("ang_dist", 4, _ang_dist, deterministic=True)
        self._db.create_function("es_wildcard", 3, dsl.es_wildcard, deterministic=True)

    # -- writes --------------------------------------------------------------------------
    def upsert(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        from broker.association import pixels_of

        docs = [strict(d) for d in docs]
        for i, d in enumerate(docs):
            if not d.get("locus_id") or d.get("ra") is None or d.get("dec") is None:
                raise ValueError(f"document #{i} ({d.get('locus_id')!r}): needs locus_id, ra and dec")
        ra = np.array([d["ra"] for d in docs], dtype=float)
        dec = np.array([d["dec"] for d in docs], dtype=float)
        pix = pixels_of(ra, dec, PIXEL_ORDER)
        rows = [
            (d["locus_id"], int(p), d["ra"], d["dec"], (d.get("properties") or {}).get(_NEWEST), dumps(d))
            for d, p in zip(docs, pix.tolist(), strict=True)
        ]
        ids = [(d["locus_id"],) for d in docs]
        tag_rows = [(t, d["locus_id"]) for d in docs for t in set(d.get("tags") or [])]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO docs VALUES (?,?,?,?,?,?)", rows)
                self._db.executemany("DELETE FROM tags WHERE locus_id=?", ids)
                self._db.executemany("INSERT OR IGNORE INTO tags VALUES (?,?)", tag_rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- reads ---------------------------------------------------------------------------
    def get(self, locus_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM docs WHERE locus_id=?", (locus_id,)).fetchone()
        return loads(row[0]) if row else None

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def tag_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT tag, COUNT(*) FROM tags GROUP BY tag ORDER BY tag"))

    def summary(self) -> IndexSummary:
        def per(path: str) -> dict[str, int]:
            source = _EVENTS_JSON if path == "events" else f"json_each(docs.doc, '$.{path}')"
            return dict(self._db.execute(f"SELECT j.value, COUNT(*) FROM docs, {source} AS j "
                                         "GROUP BY j.value ORDER BY j.value"))

        with self._lock:
            lo, hi, n = self._db.execute("SELECT MIN(json_extract(doc, '$.num_alerts')), "
                                         "MAX(json_extract(doc, '$.num_alerts')), COUNT(*) FROM docs").fetchone()
            return IndexSummary(count=int(n), tags=self.tag_counts(), catalogs=per("catalogs"),
                                events=per("events"), min_num_alerts=int(lo or 0),
                                max_num_alerts=int(hi or 0))

    def random_ids(self, n: int, seed: int | None = None) -> list[str]:
        n = q.check_sample_size(n)
        with self._lock:
            if seed is None:  # SQLite's own PRNG: one pass, no ids in Python
                return [r[0] for r in self._db.execute("SELECT locus_id FROM docs ORDER BY random() LIMIT ?", (n,))]
            ids = [r[0] for r in self._db.execute("SELECT locus_id FROM docs ORDER BY locus_id")]
        rng = np.random.default_rng(seed)
        return [ids[i] for i in rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist()]

    def search(self, query: LocusQuery) -> SearchResult:
        q.check(query)
        where, args = self._where(query)
        if query.raw is not None:
            raw_sql, raw_args = dsl.compile_body(query.raw)
            where.append(raw_sql)
            args += raw_args
        name, desc = q.parse_sort(query.sort)
        sort_expr, sort_args = self._value_expr(name)
        page_where, page_args = list(where), list(args)
        if query.search_after is not None:
            value, last_id = query.search_after
            if value is None:
                page_where.append(f"({sort_expr} IS NULL AND locus_id > ?)")
                page_args += [*sort_args, last_id]
            else:
                op = "<" if desc else ">"
                page_where.append(
                    f"({sort_expr} {op} ? OR ({sort_expr} = ? AND locus_id > ?) OR {sort_expr} IS NULL)"
                )
                page_args += [*sort_args, value, *sort_args, value, last_id, *sort_args]
        order = f"({sort_expr}) IS NULL, {sort_expr} {'DESC' if desc else 'ASC'}, locus_id ASC"
        w = " AND ".join(page_where) or "1"
        sql = f"SELECT doc, {sort_expr} FROM docs WHERE {w} ORDER BY {order} LIMIT ?"
        all_args = [*sort_args, *page_args, *sort_args, *sort_args, query.limit]
        with self._lock:
            rows = self._db.execute(sql, all_args).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM docs WHERE {' AND '.join(where) or '1'}",
                                     args).fetchone()[0]
        hits = [loads(doc) for doc, _ in rows]
        cursor = None
        if rows and len(rows) == query.limit:
            last = hits[-1]
            cursor = [rows[-1][1], last["locus_id"]]
        return SearchResult(hits=hits, total=total, next_cursor=cursor)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _value_expr(name: str) -> tuple[str, list[Any]]:
        """SQL for one query name's value, with its parameters."""
        if name == _NEWEST:
            return "newest", []
        if name in ("locus_id", "ra", "dec"):
            return name, []
        path = q.field_path(name)
        parts = path.split(".", 1)
        json_path = f'$.{parts[0]}' if len(parts) == 1 else f'$.{parts[0]}."{parts[1]}"'
        return "json_extract(doc, ?)", [json_path]

    def _where(self, query: LocusQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if query.cone is not None:
            ra, dec, radius = query.cone
            ranges = cone_pixel_ranges(ra, dec, radius, PIXEL_ORDER)
            where.append("(" + " OR ".join("pixel BETWEEN ? AND ?" for _ in ranges) + ")")
            for lo, hi in ranges:
                args += [lo, hi]
            where.append("ang_dist(ra, dec, ?, ?) <= ?")
            args += [ra, dec, radius]
        for tag in dict.fromkeys(query.tags):
            where.append("locus_id IN (SELECT locus_id FROM tags WHERE tag = ?)")
            args.append(tag)
        if query.region is not None:
            ranges = q.region_ranges_at(query.region, PIXEL_ORDER)
            where.append("(" + (" OR ".join("(pixel >= ? AND pixel < ?)" for _ in ranges) or "0") + ")")
            for lo, hi in ranges:
                args += [lo, hi]
        for event in dict.fromkeys(query.events):
            where.append(f"EXISTS (SELECT 1 FROM {_EVENTS_JSON} AS j WHERE j.value = ?)")
            args.append(event)
        for name, (lo, hi) in query.ranges.items():
            expr, eargs = self._value_expr(name)
            if lo is not None:
                where.append(f"{expr} >= ?")
                args += [*eargs, lo]
            if hi is not None:
                where.append(f"{expr} <= ?")
                args += [*eargs, hi]
            if lo is None and hi is None:
                where.append(f"{expr} IS NOT NULL")
                args += eargs
        for name, value in query.terms.items():
            expr, eargs = self._value_expr(name)
            where.append(f"CAST({expr} AS TEXT) = ?")
            args += [*eargs, str(value)]
        return where, args

    # -- multi-messenger events -----------------------------------------------------------
    def upsert_events(self, docs: list[dict[str, Any]]) -> None:
        rows = []
        for i, d in enumerate(docs):
            d = strict(d)
            if not d.get("event_id"):
                raise ValueError(f"event document #{i}: needs event_id")
            rows.append((d["event_id"], d.get("event_mjd"), d.get("messenger"), d.get("status"),
                         int(bool(d.get("test"))), dumps(d)))
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?)", rows)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM events WHERE event_id=?", (event_id,)).fetchone()
        return loads(row[0]) if row else None

    def search_events(self, query: EventQuery) -> SearchResult:
        q.check_events(query)
        where, args = ["1"], []
        for col, value in (("messenger", query.messenger), ("status", query.status)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if not query.include_test:
            where.append("test = 0")
        if query.since_mjd is not None:
            where.append("event_mjd >= ?")
            args.append(query.since_mjd)
        if query.until_mjd is not None:
            where.append("event_mjd <= ?")
            args.append(query.until_mjd)
        w = " AND ".join(where)
        with self._lock:
            rows = self._db.execute(f"SELECT doc FROM events WHERE {w} ORDER BY event_mjd DESC, event_id LIMIT ?",
                                    (*args, query.limit)).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM events WHERE {w}", args).fetchone()[0]
        return SearchResult(hits=[loads(r[0]) for r in rows], total=int(total))

    def close(self) -> None:
        with self._lock:
            self._db.close()
