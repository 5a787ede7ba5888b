"""The production store: loci, alerts and their history in Apache Cassandra.

Tables follow the queries (Cassandra has no joins; each read is one partition or a few):

* ``loci`` — by locus id: the whole locus record (JSON) for ``load_loci``;
* ``loci_by_pixel`` — partition = a coarse HEALPix *region* (order ``association_order - 6``,
  ~7' at the default 1" radius), clustered by association pixel: one partition read answers every
  association lookup of a region of the sky;
* ``alert_blocks`` — partition = locus, one row per batch that brought the locus new alerts,
  holding them as one JSON value (:mod:`broker.adapters.storage.alert_blocks`): a light curve is
  one partition of a few rows (``alerts_by_locus``, one row per alert, is what migration 9 replaced);
* ``alert_ids_by_object`` — partition = survey object (``ztf:<objectId>``, ``lsst:<diaObjectId>``),
  clustered by alert id: the "already stored?" check, one read per object a packet is about;
  ``alerts`` — by alert id, the same check for alerts without a survey object;
* ``catalog_matches`` (locus, catalog), ``filter_revisions`` (filter, revision), ``cutouts``,
  ``dead_letters`` (partition = UTC day, newest first);
* ``dead_letter_keys`` — one row per rejected message (:attr:`DeadLetter.key`): a message
  rejected again (a replay) is not stored a second time;
* ``locus_claims`` — partition = a claim region, the loci founded there recently and a token;
  ``region_locks`` — one lightweight-transaction lease row per claim region; see :meth:`claim_new_loci`;
* ``catalog_records`` (event, version), ``catalog_releases`` — the FAIR catalog's versions, each
  written once with a lightweight transaction (``IF NOT EXISTS``): published versions never change;
* ``schema_version`` — migrations applied, in order, once.

Every write is an upsert keyed by ids, so replaying a batch rewrites identical cells (no
timestamps or counters that a replay would change). Writes are prepared statements, grouped by
partition key: a batch only ever holds rows of one partition (a locus's alerts, a region's
position rows), never the multi-partition unlogged batches that make a coordinator fan out.
They go out through ``execute_concurrent`` with at most ``max_in_flight`` requests outstanding
(``store.cassandra_max_in_flight``): the window is the backpressure, so one worker cannot queue
more than that on the server, however large its batch. While Cassandra is unreachable, reads
and writes retry with backoff for up to ``outage_timeout_s`` before raising, so a worker rides
through a node restart.

**No duplicate loci.** Two workers that see alerts at the same place in the same instant would
each found a locus. :meth:`claim_new_loci` makes founding a compare-and-set per *claim region*
(order ``association_order - 13``, ~215 deg² at 1", so a batch's new loci fall in a handful):
``locus_claims`` holds, per claim region, the positions claimed there and a static ``claim_token``.
A claim reads the candidates' 3×3 pixel blocks (plus a sentinel row that carries the token) from
``locus_claims`` and ``loci_by_pixel``, decides the winners, and writes them with one
conditional batch per claim region, ``IF claim_token = <the token it read>``, which also sets a new
token. Rows and token change together (one partition, one Paxos round), so a batch that
succeeds saw every claim made before it; one that fails re-reads that region and tries again.
That is one round trip per batch and region, not one LWT per locus. A candidate whose block
reaches into a neighbouring claim region (~0.05% of them) could conflict with a candidate homed
there, which no single-partition condition covers: those few also take the LWT lease of every
claim region they touch (``region_locks``, ``INSERT ... IF NOT EXISTS USING TTL``) for the
duration of the claim, so two such claims never interleave. The lease TTL only matters if a
worker dies holding one; the claim rows expire after ``CLAIM_TTL_S``, long after the winners'
``loci_by_pixel`` rows (written by the claim itself) are there.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from broker.adapters.storage.alert_blocks import decode_blocks, encode_blocks
from broker.adapters.storage.common import alert_from_row, resolve_claims
from broker.alert import Alert
from broker.association import LocusPositions, neighbour_block, pixels_of
from broker.jsonutil import dumps, loads
from broker.locus import Locus, locus_from_record, locus_record, survey_object_key
from broker.ports import CatalogConflict, DeadLetter, Output, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

#: region order = association order minus this (4^6 = 4096 association pixels per region).
REGION_DELTA = 6
LOCK_TTL_S = 30
#: claim region order = association order minus this (order 2 at 1": 192 regions of ~215 deg², so a
#: visit's new loci fall in one to four of them, and even a batch spread over 40° patches shares a few
#: dozen). Every worker of a keyspace must use the same value: claims are only serialised within a region.
CLAIM_REGION_DELTA = 13
#: claimed positions are kept this long (seconds); the claim writes the winners' ``loci_by_pixel``
#: rows itself, so they are only needed until that write, and a day keeps the partitions small.
CLAIM_TTL_S = 86400
#: the clustering key of the row that carries a claim region's token in every read of it.
_SENTINEL_PIXEL = -1
#: most rows in one single-partition batch (a locus's alerts, a region's position rows).
PARTITION_BATCH_ROWS = 100

#: (version, description, steps): a step is CQL (tables named without the keyspace) or a data step
#: ``fn(session, keyspace)``.
MIGRATIONS: list[tuple[int, str, list[Any]]] = [
    (1, "initial tables", [
        """CREATE TABLE IF NOT EXISTS loci (
            locus_id text PRIMARY KEY, ra double, dec double, pixel bigint, record text, newest_mjd double)""",
        """CREATE TABLE IF NOT EXISTS loci_by_pixel (
            region bigint, pixel bigint, locus_id text, ra double, dec double,
            PRIMARY KEY ((region), pixel, locus_id))""",
        """CREATE TABLE IF NOT EXISTS alerts_by_locus (
            locus_id text, mjd double, alert_id text, survey int, ra double, dec double, passband text,
            mag double, magerr double, maglim double, object_id text, is_history boolean, properties text,
            PRIMARY KEY ((locus_id), mjd, alert_id)) WITH CLUSTERING ORDER BY (mjd ASC, alert_id ASC)""",
        """CREATE TABLE IF NOT EXISTS alerts (alert_id text PRIMARY KEY, locus_id text, mjd double)""",
        """CREATE TABLE IF NOT EXISTS cutouts (alert_id text, kind text, data blob, PRIMARY KEY ((alert_id), kind))""",
        """CREATE TABLE IF NOT EXISTS dead_letters (
            day text, id timeuuid, received_at double, source text, reason text, message text, payload blob,
            headers text, PRIMARY KEY ((day), id)) WITH CLUSTERING ORDER BY (id DESC)""",
        """CREATE TABLE IF NOT EXISTS catalog_matches (
            locus_id text, catalog text, version text, matches text, PRIMARY KEY ((locus_id), catalog))""",
        """CREATE TABLE IF NOT EXISTS filter_revisions (
            filter text, revision text, code text, registered_at double, PRIMARY KEY ((filter), revision))""",
        """CREATE TABLE IF NOT EXISTS region_locks (region bigint PRIMARY KEY, owner text)""",
    ]),
    (2, "dead letters keyed by message", [
        """CREATE TABLE IF NOT EXISTS dead_letter_keys (letter_key text PRIMARY KEY, day text, id timeuuid)""",
    ]),
]
MIGRATIONS.append((3, "multi-messenger notices and events", [
    """CREATE TABLE IF NOT EXISTS notices (notice_id text PRIMARY KEY, event_id text, record text)""",
    """CREATE TABLE IF NOT EXISTS notices_by_event (
        event_id text, notice_id text, record text, PRIMARY KEY ((event_id), notice_id))""",
    """CREATE TABLE IF NOT EXISTS notice_skymaps (
        notice_id text, chunk int, chunks int, data blob, PRIMARY KEY ((notice_id), chunk))""",
    """CREATE TABLE IF NOT EXISTS mm_events (event_id text PRIMARY KEY, event_mjd double, status text, record text)""",
    """CREATE TABLE IF NOT EXISTS mm_events_by_time (
        bucket int, event_mjd double, event_id text, status text, record text,
        PRIMARY KEY ((bucket), event_mjd, event_id)) WITH CLUSTERING ORDER BY (event_mjd ASC, event_id ASC)""",
]))
MIGRATIONS.append((4, "outgoing alerts per event and revision", [
    """CREATE TABLE IF NOT EXISTS mm_outgoing (
        event_id text, record_number int, record text, PRIMARY KEY ((event_id), record_number))""",
]))
MIGRATIONS.append((5, "reconstruction scans and their pixel results", [
    """CREATE TABLE IF NOT EXISTS scans (scan_id text PRIMARY KEY, status text, created double, record text)""",
    """CREATE TABLE IF NOT EXISTS scans_by_created (
        bucket int, created double, scan_id text, status text, record text,
        PRIMARY KEY ((bucket), created, scan_id)) WITH CLUSTERING ORDER BY (created DESC, scan_id ASC)""",
    """CREATE TABLE IF NOT EXISTS scan_pixels (
        scan_id text, nside int, pixel bigint, llh double, e_in double, e_tot double,
        PRIMARY KEY ((scan_id), nside, pixel))""",
]))
MIGRATIONS.append((6, "FAIR event catalog: immutable record versions and releases", [
    """CREATE TABLE IF NOT EXISTS catalog_records (
        event_id text, version int, record text, PRIMARY KEY ((event_id), version))""",
    """CREATE TABLE IF NOT EXISTS catalog_releases (bucket int, version int, record text, PRIMARY KEY ((bucket), version))""",
]))
MIGRATIONS.append((7, "locus claims per claim region, compare-and-set on a token", [
    f"""CREATE TABLE IF NOT EXISTS locus_claims (
        claim_region bigint, pixel bigint, locus_id text, ra double, dec double, claim_token text static,
        PRIMARY KEY ((claim_region), pixel, locus_id)) WITH default_time_to_live = {CLAIM_TTL_S}""",
]))


def _index_stored_alerts_by_object(session: Any, keyspace: str) -> None:
    """Migration 8's data step: the alerts stored before it, indexed by their survey object.

    A full scan of ``alerts_by_locus``, once, on an upgraded keyspace (a new one has no rows); after
    it the per-object index is complete, which is what lets :meth:`CassandraStore.existing_alert_ids`
    read one partition per object instead of one per alert. Alerts without a survey object need
    nothing: the code before this migration gave every alert its per-id ``alerts`` row.
    """
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.query import SimpleStatement

    ins = session.prepare(f"INSERT INTO {keyspace}.alert_ids_by_object (object_key, alert_id, locus_id) "
                          "VALUES (?,?,?)")
    scan = SimpleStatement(f"SELECT {', '.join(_ALERT_COLS)} FROM {keyspace}.alerts_by_locus", fetch_size=2000)
    rows: list[tuple[str, str, str]] = []
    n = 0
    for r in session.execute(scan):
        a = CassandraStore._alert(r)
        key = survey_object_key(a)
        if key is not None:
            rows.append((key, a.alert_id, a.locus_id))
        if len(rows) >= 2000:
            execute_concurrent_with_args(session, ins, rows, concurrency=32, raise_on_first_error=True)
            n += len(rows)
            rows = []
    if rows:
        execute_concurrent_with_args(session, ins, rows, concurrency=32, raise_on_first_error=True)
        n += len(rows)
    if n:
        log.info("cassandra store %s: indexed %d stored alerts by survey object", keyspace, n)


MIGRATIONS.append((8, "alert ids by survey object (one existence read per object, not per alert)", [
    """CREATE TABLE IF NOT EXISTS alert_ids_by_object (
        object_key text, alert_id text, locus_id text, PRIMARY KEY ((object_key), alert_id))""",
    _index_stored_alerts_by_object,
]))


def _block_stored_alerts(session: Any, keyspace: str) -> None:
    """Migration 9's data step: the per-alert rows stored before it, rewritten as alert blocks.

    A full scan of ``alerts_by_locus``, once, on an upgraded keyspace (a new one has no rows). A
    scan returns each partition's rows together, so one locus is held at a time; block ids are
    derived from their alerts, so a step interrupted and run again writes the same rows. The old
    table is left as it was (nothing reads it after this step): drop it once the upgrade is checked.
    """
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.query import SimpleStatement

    ins = session.prepare(f"INSERT INTO {keyspace}.alert_blocks (locus_id, block_id, alert_ids, alerts) "
                          "VALUES (?,?,?,?)")
    scan = SimpleStatement(f"SELECT {', '.join(_ALERT_COLS)} FROM {keyspace}.alerts_by_locus", fetch_size=2000)
    pending: list[tuple[str, str, str, bytes]] = []
    n = 0

    def flush_locus(locus_id: str | None, alerts: list[Alert]) -> None:
        if locus_id is not None:
            pending.extend((locus_id, bid, "\n".join(ids), body) for bid, ids, body in encode_blocks(alerts))

    current: str | None = None
    alerts: list[Alert] = []
    for r in session.execute(scan):
        if r.locus_id != current:
            flush_locus(current, alerts)
            current, alerts = r.locus_id, []
            if len(pending) >= 200:
                execute_concurrent_with_args(session, ins, pending, concurrency=16, raise_on_first_error=True)
                n += len(pending)
                pending = []
        alerts.append(CassandraStore._alert(r))
        alerts[-1].locus_id = r.locus_id
    flush_locus(current, alerts)
    if pending:
        execute_concurrent_with_args(session, ins, pending, concurrency=16, raise_on_first_error=True)
        n += len(pending)
    if n:
        log.info("cassandra store %s: rewrote the stored alerts as %d alert blocks", keyspace, n)


MIGRATIONS.append((9, "alerts as one block per locus and batch (one row and one value, not one row per alert)", [
    """CREATE TABLE IF NOT EXISTS alert_blocks (
        locus_id text, block_id text, alert_ids text, alerts blob, PRIMARY KEY ((locus_id), block_id))""",
    _block_stored_alerts,
]))
SCHEMA_VERSION = MIGRATIONS[-1][0]
# each migration once, in order: two with one number would leave a store upgraded by one of them without the other
assert [v for v, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)), "migrations must be numbered 1, 2, 3 ..."
#: sky maps are stored in chunks of this many bytes (a whole map in one cell would exceed Cassandra's
#: mutation and frame limits for a flat nside-1024 map).
SKYMAP_CHUNK = 1024 * 1024

_ALERT_COLS = ("locus_id", "mjd", "alert_id", "survey", "ra", "dec", "passband", "mag", "magerr", "maglim",
               "object_id", "is_history", "properties")


def _merge_positions(a: LocusPositions, b: LocusPositions) -> LocusPositions:
    """Positions of both, each locus once (a stored row wins over its claim row: it is the current position)."""
    known = set(a.locus_ids)
    keep = [k for k, lid in enumerate(b.locus_ids) if lid not in known]
    if not keep:
        return a
    return LocusPositions(list(a.locus_ids) + [b.locus_ids[k] for k in keep],
                          np.concatenate([a.ra, b.ra[keep]]), np.concatenate([a.dec, b.dec[keep]]),
                          np.concatenate([a.pixel, b.pixel[keep]]).astype(np.int64))


def _request_bytes(stmt: Any, params: Any) -> int:
    """About how many bytes a request puts on the wire: its values (serialised or not) plus framing."""
    if params is not None:
        values = params
    elif (known := getattr(stmt, "albireo_request_bytes", None)) is not None:
        return known  # a batch built by _grouped, which already counted its bytes
    elif hasattr(stmt, "_statements_and_parameters"):  # a batch: (prepared?, statement, serialised values)
        return 64 + sum(_request_bytes(None, p) for _, _, p in stmt._statements_and_parameters)
    else:
        values = getattr(stmt, "values", None) or ()
    return 32 + sum(len(v) if isinstance(v, (bytes, bytearray, memoryview, str)) else 8 for v in values)


def _waves(work: list[tuple[Any, Any]], max_bytes: int) -> Iterator[list[tuple[Any, Any]]]:
    """``work`` in consecutive slices of at most ``max_bytes`` request bytes (a larger request alone)."""
    wave: list[tuple[Any, Any]] = []
    size = 0
    for item in work:
        n = _request_bytes(*item)
        if wave and size + n > max_bytes:
            yield wave
            wave, size = [], 0
        wave.append(item)
        size += n
    if wave:
        yield wave


class CassandraStore(Store):
    """Loci and alerts in a Cassandra keyspace (created, with its tables, when missing)."""

    def __init__(self, hosts: Sequence[str] = ("127.0.0.1",), port: int = 9042, keyspace: str = "albireo",
                 association_order: int = 15, consistency: str = "LOCAL_QUORUM",
                 replication: dict[str, Any] | None = None, outage_timeout_s: float = 300.0,
                 max_in_flight: int = 64, batch_by: str = "replica"):
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            TokenAwarePolicy,
        )

        if not keyspace.replace("_", "").isalnum():
            raise ValueError(f"bad keyspace name {keyspace!r}")
        self.association_order = int(association_order)
        self.region_shift = 2 * min(REGION_DELTA, self.association_order)
        self.keyspace = keyspace
        self.outage_timeout_s = outage_timeout_s
        if int(max_in_flight) < 1:
            raise ValueError(f"store.cassandra_max_in_flight {max_in_flight!r}: must be at least 1")
        self.concurrency = int(max_in_flight)
        if batch_by not in ("partition", "replica"):
            raise ValueError(f"store.cassandra_batch_by {batch_by!r}: must be 'partition' or 'replica'")
        self.batch_by = batch_by
        self.claim_shift = 2 * min(CLAIM_REGION_DELTA, self.association_order)
        try:
            self._cl = ConsistencyLevel.name_to_value[consistency.upper()]
        except KeyError:
            raise ValueError(f"store.consistency {consistency!r}: not a Cassandra consistency level") from None
        self._quorum_reads = self._cl in (ConsistencyLevel.QUORUM, ConsistencyLevel.LOCAL_QUORUM,
                                          ConsistencyLevel.EACH_QUORUM, ConsistencyLevel.ALL)
        self._quorum = max(self._cl, ConsistencyLevel.LOCAL_QUORUM) if self._cl != ConsistencyLevel.ANY else \
            ConsistencyLevel.LOCAL_QUORUM
        profile = ExecutionProfile(consistency_level=self._cl, serial_consistency_level=ConsistencyLevel.SERIAL,
                                   request_timeout=30,
                                   load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()))
        # No compression: on a local or LAN node it costs the worker CPU and saves nothing; the
        # in-flight window (not the driver's per-connection stream limit) bounds outstanding requests.
        self._cluster = Cluster(list(hosts), port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                                reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
                                connect_timeout=10, compression=False)
        self._session = self._retry(self._cluster.connect)
        self._migrate(replication or {"class": "SimpleStrategy", "replication_factor": 1})
        self._session.set_keyspace(keyspace)
        self._prepare()
        self._owner = f"{uuid.uuid4()}"

    # -- schema --------------------------------------------------------------------------
    def _migrate(self, replication: dict[str, Any]) -> None:
        rep = ", ".join(f"'{k}': {v!r}" if not isinstance(v, str) else f"'{k}': '{v}'" for k, v in replication.items())
        s = self._session
        s.execute(f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = {{{rep}}}")
        s.execute(f"CREATE TABLE IF NOT EXISTS {self.keyspace}.schema_version "
                  "(component text, version int, description text, applied_at double, "
                  "PRIMARY KEY ((component), version))")
        applied = {r.version for r in s.execute(
            f"SELECT version FROM {self.keyspace}.schema_version WHERE component='store'")}
        newest_known = max(v for v, _, _ in MIGRATIONS)
        if applied and max(applied) > newest_known:
            raise RuntimeError(f"keyspace {self.keyspace}: store schema v{max(applied)} is newer than this "
                               f"code (v{newest_known}); upgrade the broker")
        for version, description, statements in MIGRATIONS:
            if version in applied:
                continue
            for stmt in statements:
                if callable(stmt):  # a data step (runs once, like the DDL before it)
                    stmt(s, self.keyspace)
                else:
                    s.execute(stmt.replace("CREATE TABLE IF NOT EXISTS ",
                                           f"CREATE TABLE IF NOT EXISTS {self.keyspace}."))
            s.execute(f"INSERT INTO {self.keyspace}.schema_version (component, version, description, applied_at) "
                      "VALUES ('store', %s, %s, %s)", (version, description, time.time()))
            log.info("cassandra store %s: applied migration %d (%s)", self.keyspace, version, description)

    def schema_versions(self) -> list[int]:
        return sorted(r.version for r in self._session.execute(
            "SELECT version FROM schema_version WHERE component='store'"))

    def _prepare(self) -> None:
        p = self._session.prepare
        self._ins_locus = p("INSERT INTO loci (locus_id, ra, dec, pixel, record, newest_mjd) VALUES (?,?,?,?,?,?)")
        self._ins_pixel = p("INSERT INTO loci_by_pixel (region, pixel, locus_id, ra, dec) VALUES (?,?,?,?,?)")
        self._ins_pixel.consistency_level = self._quorum
        self._del_pixel = p("DELETE FROM loci_by_pixel WHERE region=? AND pixel=? AND locus_id=?")
        self._sel_letter_key = p("SELECT letter_key FROM dead_letter_keys WHERE letter_key=?")
        self._ins_letter_key = p("INSERT INTO dead_letter_keys (letter_key, day, id) VALUES (?,?,?)")
        self._ins_block = p("INSERT INTO alert_blocks (locus_id, block_id, alert_ids, alerts) VALUES (?,?,?,?)")
        self._ins_alert = p("INSERT INTO alerts (alert_id, locus_id, mjd) VALUES (?,?,?)")
        self._ins_cutout = p("INSERT INTO cutouts (alert_id, kind, data) VALUES (?,?,?)")
        self._ins_catalog = p("INSERT INTO catalog_matches (locus_id, catalog, version, matches) VALUES (?,?,?,?)")
        self._ins_dead = p("INSERT INTO dead_letters (day, id, received_at, source, reason, message, payload, "
                           "headers) VALUES (?,?,?,?,?,?,?,?)")
        self._sel_pixels = p("SELECT locus_id, ra, dec, pixel FROM loci_by_pixel WHERE region=? AND pixel IN ?")
        self._sel_pixels_q = p("SELECT locus_id, ra, dec, pixel FROM loci_by_pixel WHERE region=? AND pixel IN ?")
        self._sel_pixels_q.consistency_level = self._quorum
        self._sel_locus = p("SELECT locus_id, record FROM loci WHERE locus_id=?")
        self._sel_blocks = p("SELECT alerts FROM alert_blocks WHERE locus_id=?")
        self._sel_alert_id = p("SELECT alert_id FROM alerts WHERE alert_id=?")
        self._sel_object_alert_ids = p("SELECT alert_id FROM alert_ids_by_object WHERE object_key=? AND alert_id IN ?")
        self._ins_object_alert_id = p("INSERT INTO alert_ids_by_object (object_key, alert_id, locus_id) VALUES (?,?,?)")
        self._sel_cutouts = p("SELECT kind, data FROM cutouts WHERE alert_id=?")
        self._sel_dead = p("SELECT source, reason, message, payload, received_at, headers FROM dead_letters "
                           "WHERE day=? LIMIT ?")
        self._lock_stmt = p(f"INSERT INTO region_locks (region, owner) VALUES (?, ?) IF NOT EXISTS USING TTL {LOCK_TTL_S}")
        self._unlock = p("DELETE FROM region_locks WHERE region=? IF owner=?")
        self._sel_claims = p("SELECT claim_token, pixel, locus_id, ra, dec FROM locus_claims WHERE claim_region=? AND pixel IN ?")
        self._sel_claims.consistency_level = self._quorum
        self._cas_claims = p("UPDATE locus_claims SET claim_token=? WHERE claim_region=? IF claim_token=?")
        self._ins_claim = p("INSERT INTO locus_claims (claim_region, pixel, locus_id, ra, dec) VALUES (?,?,?,?,?)")
        self._ins_revision = p("INSERT INTO filter_revisions (filter, revision, code, registered_at) VALUES (?,?,?,?)")
        self._sel_revisions = p("SELECT revision, code, registered_at FROM filter_revisions WHERE filter=?")

    # -- plumbing ------------------------------------------------------------------------
    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying with backoff while the cluster is unreachable (up to outage_timeout_s)."""
        from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.cluster import NoHostAvailable

        deadline = time.monotonic() + self.outage_timeout_s
        delay = 0.5
        while True:
            try:
                return fn()
            except (NoHostAvailable, OperationTimedOut, Unavailable, ReadTimeout, WriteTimeout, ConnectionError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("cassandra unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 10.0)

    def _concurrent(self, stmt: Any, params: list[tuple]) -> list[Any]:
        """Execute one prepared statement for many parameter tuples; results in order, errors raised."""

        if not params:
            return []

        return self._concurrent_mixed([(stmt, p) for p in params])

    def _regions(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(pixels, dtype=np.int64) >> self.region_shift

    # -- reads ---------------------------------------------------------------------------
    def locus_positions(self, pixels: Iterable[int], _quorum: bool = False) -> LocusPositions:
        pix = np.array(sorted({int(p) for p in pixels if int(p) >= 0}), dtype=np.int64)
        if pix.size == 0:
            return LocusPositions.empty()
        regions = self._regions(pix)
        params = []
        for region in np.unique(regions).tolist():
            members = pix[regions == region].tolist()
            for i in range(0, len(members), 100):
                params.append((region, members[i : i + 100]))
        rows = [r for rs in self._concurrent(self._sel_pixels_q if _quorum else self._sel_pixels, params) for r in rs]
        return LocusPositions([r.locus_id for r in rows], np.array([r.ra for r in rows], dtype=float),
                              np.array([r.dec for r in rows], dtype=float),
                              np.array([r.pixel for r in rows], dtype=np.int64))

    def load_loci(self, locus_ids: Iterable[str], with_alerts: bool = True) -> dict[str, Locus]:
        ids = list(dict.fromkeys(locus_ids))
        recs = {}
        for rs in self._concurrent(self._sel_locus, [(i,) for i in ids]):
            for r in rs:
                recs[r.locus_id] = loads(r.record)
        alerts: dict[str, list[Alert]] = {lid: [] for lid in recs}
        if with_alerts and recs:
            present = list(recs)
            for lid, rs in zip(present, self._concurrent(self._sel_blocks, [(i,) for i in present]), strict=True):
                alerts[lid] = decode_blocks(lid, [r.alerts for r in rs])
        return {lid: locus_from_record(recs[lid], alerts[lid]) for lid in ids if lid in recs}

    def existing_alert_ids(self, alerts: Iterable[Alert]) -> set[str]:
        """One read per survey object (its partition of ``alert_ids_by_object``), not one per alert.

        A ZTF packet carries tens of history rows of one object, a Rubin packet its previous
        sources: looking each id up in its own partition made association send ~15,000 reads per
        batch. An alert is found under the object it was stored with (its id and object never
        change); alerts without a survey object (solar-system sources) have per-id rows.
        """
        by_object: dict[str, list[str]] = {}
        lone: list[str] = []
        seen: set[str] = set()
        for a in alerts:
            if a.alert_id in seen:
                continue
            seen.add(a.alert_id)
            key = survey_object_key(a)
            if key is None:
                lone.append(a.alert_id)
            else:
                by_object.setdefault(key, []).append(a.alert_id)
        reqs = [(self._sel_object_alert_ids, (key, ids[i : i + 100]))
                for key, ids in by_object.items() for i in range(0, len(ids), 100)]
        reqs += [(self._sel_alert_id, (i,)) for i in lone]
        return {r.alert_id for rs in self._concurrent_mixed(reqs) for r in rs}

    def alerts_for_locus(self, locus_id: str) -> list[Alert]:
        rows = self._retry(lambda: self._session.execute(self._sel_blocks, (locus_id,)))
        return decode_blocks(locus_id, [r.alerts for r in rows])

    def cutouts(self, alert_id: str) -> dict[str, bytes]:
        return {r.kind: bytes(r.data) for r in self._retry(lambda: self._session.execute(self._sel_cutouts,
                                                                                          (alert_id,)))}

    def iter_loci(self, batch_size: int = 500, since_mjd: float | None = None,
                  until_mjd: float | None = None) -> Iterator[list[Locus]]:
        """A full token-order scan of ``loci`` (backfills are rare; no secondary index is kept for them)."""
        from cassandra.query import SimpleStatement

        lo = -np.inf if since_mjd is None else since_mjd
        hi = np.inf if until_mjd is None else until_mjd
        stmt = SimpleStatement("SELECT locus_id, newest_mjd FROM loci", fetch_size=batch_size)
        ids: list[str] = []
        for r in self._retry(lambda: self._session.execute(stmt)):
            if r.newest_mjd is not None and lo <= r.newest_mjd <= hi:
                ids.append(r.locus_id)
                if len(ids) == batch_size:
                    loci = self.load_loci(ids)
                    yield [loci[i] for i in ids if i in loci]
                    ids = []
        if ids:
            loci = self.load_loci(ids)
            yield [loci[i] for i in ids if i in loci]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first, walking back one UTC day at a time (at most a year)."""
        out: list[DeadLetter] = []
        seen: set[str] = set()
        day = time.time()
        for _ in range(366):
            if len(out) >= limit:
                break
            key = time.strftime("%Y-%m-%d", time.gmtime(day))
            for r in self._retry(lambda k=key: self._session.execute(self._sel_dead, (k, limit - len(out) + 10))):
                letter = DeadLetter(r.source, r.reason, r.message, bytes(r.payload or b""), r.received_at,
                                    loads(r.headers) or {})
                if letter.key not in seen:
                    seen.add(letter.key)
                    out.append(letter)
            day -= 86400
        return out[:limit]

    def counts(self) -> dict[str, int]:
        """Row counts by full scans: for tests and small status pages, not for hot paths."""
        from cassandra.query import SimpleStatement

        out = {}
        for name, table in (("loci", "loci"), ("dead_letters", "dead_letter_keys")):
            stmt = SimpleStatement(f"SELECT COUNT(*) FROM {table}", fetch_size=5000)
            out[name] = int(self._retry(lambda s=stmt: self._session.execute(s, timeout=120)).one()[0])
        # alerts: distinct ids per locus (a replay may have put an alert in a second block, see alert_blocks)
        stmt = SimpleStatement("SELECT locus_id, alert_ids FROM alert_blocks", fetch_size=2000)
        ids: dict[str, set[str]] = {}
        for r in self._retry(lambda: self._session.execute(stmt, timeout=120)):
            ids.setdefault(r.locus_id, set()).update((r.alert_ids or "").split("\n"))
        return {"loci": out["loci"], "alerts": sum(len(v - {""}) for v in ids.values()),
                "dead_letters": out["dead_letters"]}

    def filter_revisions(self, filter_name: str) -> list[dict[str, Any]]:
        rows = self._retry(lambda: self._session.execute(self._sel_revisions, (filter_name,)))
        return [{"revision": r.revision, "code": r.code, "registered_at": r.registered_at} for r in rows]

    # -- writes --------------------------------------------------------------------------
    def save_batch(
        self, loci: list[Locus], new_alerts: list[Alert], cutouts: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        if loci:
            pix = pixels_of(np.array([x.ra for x in loci]), np.array([x.dec for x in loci]), self.association_order)
        else:
            pix = np.empty(0, dtype=np.int64)
        regions = self._regions(pix)
        moved = [i for i, x in enumerate(loci) if x.stored_position is not None]
        old_pix = np.full(len(loci), -1, dtype=np.int64)
        if moved:
            old_pix[moved] = pixels_of(np.array([loci[i].stored_position[0] for i in moved]),
                                       np.array([loci[i].stored_position[1] for i in moved]), self.association_order)
        locus_rows, pixel_rows, catalog_rows, moves = [], [], [], []
        for x, p, reg, old in zip(loci, pix.tolist(), regions.tolist(), old_pix.tolist(), strict=True):
            locus_rows.append((x.locus_id, x.ra, x.dec, p, dumps(locus_record(x)),
                               x.internal_properties.get("newest_alert_observation_time")))
            if old >= 0 and old != p:
                moves.append(((reg, p, x.locus_id, x.ra, x.dec), (int(old) >> self.region_shift, int(old), x.locus_id)))
            else:
                pixel_rows.append((reg, p, x.locus_id, x.ra, x.dec))
            for cat, matches in x.catalog_objects.items():
                catalog_rows.append((x.locus_id, cat, x.catalog_version, dumps(matches)))
        by_id, by_object = [], []
        alerts_of: dict[str, list[Alert]] = {}
        for a in new_alerts:
            alerts_of.setdefault(a.locus_id, []).append(a)
            key = survey_object_key(a)
            if key is None:
                by_id.append((a.alert_id, a.locus_id, a.mjd))
            else:
                by_object.append((key, a.alert_id, a.locus_id))
        cut_rows = [(aid, k, v) for aid, stamps in (cutouts or {}).items() for k, v in stamps.items()]
        # Order matters for crash safety: loci and alert rows first, the existence rows (the
        # "processed" mark) only after all of them succeeded. Rows of one partition go as one
        # unlogged batch (one request, applied atomically and in isolation on that partition);
        # rows that are alone in their partition go as single prepared statements.
        from cassandra.query import BatchStatement, BatchType

        # A locus's rows of ``loci``, ``catalog_matches`` and ``alert_blocks`` share the partition
        # key value, so they are one mutation: one batch (one request) per locus, not three.
        items: list[tuple[Any, Any, tuple]] = [(("locus", r[0]), self._ins_locus, r) for r in locus_rows]
        items += [(("locus", r[0]), self._ins_catalog, r) for r in catalog_rows]
        items += [(("locus", lid), self._ins_block, (lid, bid, "\n".join(ids), body))
                  for lid, alerts in alerts_of.items() for bid, ids, body in encode_blocks(alerts)]
        items += [(("region", r[0]), self._ins_pixel, r) for r in pixel_rows]
        items += [(("cutout", r[0]), self._ins_cutout, r) for r in cut_rows]
        phase1 = self._grouped(items)
        # A locus whose mean crossed into another association pixel: its new row and the removal
        # of the old one go as one logged batch (both or neither), so association never sees the
        # locus twice or not at all. Rare: a mean moves by a fraction of an arcsecond, pixels are ~6".
        for new_row, old_key in moves:
            batch = BatchStatement(batch_type=BatchType.LOGGED, consistency_level=self._quorum)
            batch.add(self._ins_pixel, new_row)
            batch.add(self._del_pixel, old_key)
            phase1.append((batch, None))
        self._concurrent_mixed(phase1)
        # the existence rows: one partition per survey object (a packet's alerts are one request)
        self._concurrent_mixed(self._grouped([(("object", r[0]), self._ins_object_alert_id, r) for r in by_object]
                                             + [(("alert", r[0]), self._ins_alert, r) for r in by_id]))
        for x in loci:
            x.stored_position = (x.ra, x.dec)

    def _partition_batches(self, stmt: Any, rows: list[tuple], key: Callable[[tuple], Any]) -> list[tuple[Any, Any]]:
        """:meth:`_grouped` for rows of one statement."""
        return self._grouped([(key(r), stmt, r) for r in rows])

    def _grouped(self, items: list[tuple[Any, Any, tuple]], size: int = PARTITION_BATCH_ROWS,
                 max_bytes: int = 4_800, max_partitions: int = 10) -> list[tuple[Any, Any]]:
        """(partition, statement, row) items as requests: unlogged batches, a lone row as itself.

        ``batch_by = "partition"``: one batch per partition. A single-partition batch is one
        mutation, applied atomically and in isolation, with no coordinator fan-out and no
        batch-size check. Rows of different tables with the same partition key value (a locus's
        rows) are one mutation too.

        ``batch_by = "replica"``: a batch holds up to ``max_partitions`` partitions that share
        their replica set (the driver's token map), and the token-aware driver sends it to one of
        those replicas, so the coordinator applies every mutation locally and forwards each to the
        same replicas a single-partition write would reach: no fan-out to other nodes, and one
        request instead of up to ten (the Spark Cassandra connector's grouping by replica set).
        Each partition's rows still apply atomically; the batch as a whole does not, which nothing
        here needs. The bounds stay under Cassandra's warning thresholds
        (``unlogged_batch_across_partitions_warn_threshold`` 10, ``batch_size_warn_threshold``
        5 KiB), which would otherwise put a warning on every response and in the server's log;
        a partition larger than ``max_bytes`` goes alone.
        """
        by_partition: dict[Any, list[tuple[Any, Any]]] = {}
        if self.batch_by != "replica":
            for key, stmt, row in items:
                by_partition.setdefault(key, []).append((stmt, row))
            # one partition: a mutation, which Cassandra does not hold to the batch size thresholds
            return [self._as_request(m[i : i + size]) for m in by_partition.values() for i in range(0, len(m), size)]
        meta = self._cluster.metadata
        one_node = len(meta.all_hosts()) == 1  # every partition shares the one replica: no lookups
        groups: dict[Any, list[Any]] = {}
        for key, stmt, row in items:
            bound = stmt.bind(row)
            rows = by_partition.get(key)
            if rows is None:
                rows = by_partition[key] = []
                replicas = () if one_node else tuple(sorted(str(h.host_id) for h in
                                                            meta.get_replicas(self.keyspace, bound.routing_key)))
                groups.setdefault(replicas, []).append(key)
            rows.append(bound)
        out: list[tuple[Any, Any]] = []
        for keys in groups.values():
            chunk: list[tuple[Any, Any]] = []
            nbytes = parts = 0
            for key in keys:
                rows = by_partition[key]
                # the serialised values plus Cassandra's per-row and per-cell overhead in its batch size
                est = sum(40 + 10 * len(b.values) + sum(map(len, filter(None, b.values))) for b in rows)
                if chunk and (parts >= max_partitions or len(chunk) + len(rows) > size or nbytes + est > max_bytes):
                    out.append(self._as_request(chunk, nbytes))
                    chunk, nbytes, parts = [], 0, 0
                if len(rows) > size:  # one partition alone, in chunks
                    out += [self._as_request([(b, None) for b in rows[i : i + size]]) for i in range(0, len(rows), size)]
                    continue
                chunk += [(b, None) for b in rows]
                nbytes += est
                parts += 1
            if chunk:
                out.append(self._as_request(chunk, nbytes))
        return out

    def _as_request(self, chunk: list[tuple[Any, Any]], nbytes: int | None = None) -> tuple[Any, Any]:
        """One request for ``chunk``; ``nbytes``, its estimated size, spares :func:`_waves` counting it again."""
        from cassandra.query import BatchStatement, BatchType

        if len(chunk) == 1:
            return chunk[0]
        cl = max(st.consistency_level if st.consistency_level is not None else self._cl for st, _ in chunk)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=cl)
        for stmt, params in chunk:
            batch.add(stmt, params)
        if nbytes is not None:
            batch.albireo_request_bytes = 64 + nbytes
        return (batch, None)

    #: at most this many request bytes outstanding at once. Cassandra answers more than
    #: ``native_transport_max_request_data_in_flight_per_ip`` (25 MiB by default) with backpressure
    #: (a warning on every response, then refused connections, the driver's ConnectionBusy): a
    #: batch of real packets (history rows, cutouts) holds tens of MiB, so a window that counts
    #: only requests let 64 large ones through together.
    MAX_BYTES_IN_FLIGHT = 8 * 2**20

    def _concurrent_mixed(self, work: list[tuple[Any, Any]]) -> list[Any]:
        """Execute (statement, params) pairs through the bounded in-flight window; results in order.

        The window bounds both the requests (``max_in_flight``) and their bytes: the work goes in
        consecutive waves of at most :attr:`MAX_BYTES_IN_FLIGHT` bytes (a larger request alone).
        """
        from cassandra.concurrent import execute_concurrent

        if not work:
            return []
        out: list[Any] = []
        for wave in _waves(work, self.MAX_BYTES_IN_FLIGHT):
            def run(wave: list[tuple[Any, Any]] = wave) -> list[Any]:
                return self._with_busy_waits(lambda todo: execute_concurrent(
                    self._session, todo, concurrency=self.concurrency, raise_on_first_error=True,
                    results_generator=False), wave)

            out += self._retry(run)
        return out

    @staticmethod
    def _with_busy_waits(execute: Callable[[list], list], work: list[tuple[Any, Any]],
                         timeout_s: float = 120.0) -> list[Any]:
        """Run ``work``; if the driver refuses a request because the connection's socket buffer is full, pause and run it again.

        The driver refuses (``ConnectionBusy``, wrapped in ``NoHostAvailable``) instead of waiting
        when the node reads more slowly than we write: that is backpressure, answered by a short,
        growing pause. The whole wave goes again (the driver's collect-all-errors mode recurses and
        breaks under a storm of synchronous refusals): every write here is an idempotent upsert,
        and a claim's conditional batch that had already applied simply reports "not applied" and
        is re-read, finding its own claim. Any other error, and a refusal lasting ``timeout_s``, is
        raised, to :meth:`_retry` (outages) or the caller.
        """
        from cassandra.cluster import NoHostAvailable
        from cassandra.connection import ConnectionBusy

        deadline, delay = time.monotonic() + timeout_s, 0.01
        while True:
            try:
                return [r.result_or_exc for r in execute(work)]
            except NoHostAvailable as exc:
                if not exc.errors or not all(isinstance(e, ConnectionBusy) for e in exc.errors.values()):
                    raise
                if time.monotonic() > deadline:
                    raise  # to _retry, which treats it as an outage (up to outage_timeout_s)
                log.info("cassandra connection busy; resending %d requests in %.2fs", len(work), delay)
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)

    #: recorded outputs expire after this (only uncommitted input positions need them), seconds.
    OUTPUTS_TTL_S = 7 * 86400

    def _outputs_table(self) -> None:
        """Created on first use: each input position one partition; ``n`` (static) says how many rows count."""
        if getattr(self, "_ins_output", None) is None:
            self._retry(lambda: self._session.execute(
                "CREATE TABLE IF NOT EXISTS outputs (origin text, seq int, n int static, topic text, key blob, "
                f"value blob, headers text, PRIMARY KEY ((origin), seq)) WITH default_time_to_live = "
                f"{self.OUTPUTS_TTL_S}", timeout=60))
            self._ins_output = self._session.prepare(
                "INSERT INTO outputs (origin, seq, n, topic, key, value, headers) VALUES (?,?,?,?,?,?,?)")
            self._ins_output_none = self._session.prepare("INSERT INTO outputs (origin, n) VALUES (?, 0)")
            self._sel_outputs = self._session.prepare(
                "SELECT n, seq, topic, key, value, headers FROM outputs WHERE origin=?")

    def record_outputs(self, by_origin: dict[str, list[Output]]) -> None:
        # Rows are overwritten, never deleted: ``n`` (one static cell per position) says how many of them are
        # current, so a shorter record after a longer one needs no tombstones.
        self._outputs_table()
        rows = [(origin, i, len(outs), o.topic, o.key, o.value, dumps(o.headers))
                for origin, outs in by_origin.items() for i, o in enumerate(outs)]
        self._concurrent(self._ins_output, rows)
        self._concurrent(self._ins_output_none, [(origin,) for origin, outs in by_origin.items() if not outs])

    def recorded_outputs(self, origins: Iterable[str]) -> dict[str, list[Output]]:
        self._outputs_table()
        origins = list(dict.fromkeys(origins))
        out: dict[str, list[Output]] = {}
        for origin, rs in zip(origins, self._concurrent(self._sel_outputs, [(o,) for o in origins]), strict=True):
            rows = list(rs)
            n = rows[0].n or 0 if rows else 0
            if n == 0:
                continue
            out[origin] = [Output(r.topic, r.key, r.value, loads(r.headers), origin)
                           for r in sorted(rows, key=lambda r: r.seq) if r.seq is not None and r.seq < n]
        return out

    def record_dead_letter(self, letter: DeadLetter) -> bool:
        """Once per :attr:`DeadLetter.key`: the day row first, then the key row that marks it kept.

        A crash between the two leaves a day row without its key; the replay writes another, and
        :meth:`dead_letters` shows one of them (they are deduplicated by key). Dead letters are
        rare, so the extra read per letter costs nothing that matters.
        """
        from cassandra.util import uuid_from_time

        key = letter.key
        if list(self._retry(lambda: self._session.execute(self._sel_letter_key, (key,)))):
            return False
        day = time.strftime("%Y-%m-%d", time.gmtime(letter.received_at))
        uid = uuid_from_time(letter.received_at)
        params = (day, uid, letter.received_at, letter.source, letter.reason, letter.message, letter.payload,
                  dumps(letter.headers))
        self._retry(lambda: self._session.execute(self._ins_dead, params))
        self._retry(lambda: self._session.execute(self._ins_letter_key, (key, day, uid)))
        return True

    def save_filter_revision(self, filter_name: str, revision: str, code: str, registered_at: float) -> None:
        params = (filter_name, revision, code, registered_at)
        self._retry(lambda: self._session.execute(self._ins_revision, params))

    # -- filter registry (full revision records; ``filter_revisions`` above keeps code only) ----------
    def _filter_registry_table(self) -> None:
        """Created on first use (``filter_registry``): one partition holds every revision, a small table."""
        if not getattr(self, "_filter_registry_ok", False):
            self._retry(lambda: self._session.execute(
                "CREATE TABLE IF NOT EXISTS filter_registry (bucket int, name text, revision text, hash text, "
                "code text, author text, created double, status text, status_reason text, status_changed double, "
                "priority int, meta text, PRIMARY KEY ((bucket), name, revision))", timeout=60))
            self._filter_registry_ok = True

    def put_filter_revision(self, rec: dict[str, Any]) -> None:
        from broker.adapters.storage.common import FILTER_REVISION_FIELDS

        self._filter_registry_table()
        row = [rec.get(k) for k in FILTER_REVISION_FIELDS]
        row[-1] = dumps(rec.get("meta") or {})
        cols = ", ".join(FILTER_REVISION_FIELDS)
        stmt = f"INSERT INTO filter_registry (bucket, {cols}) VALUES (0, {', '.join(['%s'] * len(row))})"
        self._retry(lambda: self._session.execute(stmt, row))
        self.save_filter_revision(rec["name"], rec["revision"], rec["code"], float(rec.get("created") or time.time()))

    def list_filter_revisions(self, name: str | None = None) -> list[dict[str, Any]]:
        from broker.adapters.storage.common import FILTER_REVISION_FIELDS

        self._filter_registry_table()
        q = f"SELECT {', '.join(FILTER_REVISION_FIELDS)} FROM filter_registry WHERE bucket=0"
        rows = self._retry(lambda: list(self._session.execute(q + " AND name=%s", (name,)) if name is not None
                                        else self._session.execute(q)))
        out = []
        for r in rows:
            rec = {k: getattr(r, k) for k in FILTER_REVISION_FIELDS}
            rec["meta"] = loads(rec["meta"]) if rec["meta"] else {}
            out.append(rec)
        return sorted(out, key=lambda x: (x["name"], x["created"] or 0.0, x["revision"]))

    def set_filter_status(self, name: str, revision: str, status: str, reason: str = "",
                          at: float | None = None) -> None:
        self._filter_registry_table()
        res = self._retry(lambda: self._session.execute(
            "UPDATE filter_registry SET status=%s, status_reason=%s, status_changed=%s "
            "WHERE bucket=0 AND name=%s AND revision=%s IF EXISTS",
            (status, reason, at or time.time(), name, revision)))
        if not res.was_applied:
            raise KeyError(f"no filter revision {name}@{revision}")

    # -- backfill runs (one small partition; created on first use, like ``filter_registry``) ----------
    def locus_ids(self, since_mjd: float | None = None, until_mjd: float | None = None) -> list[str]:
        """A token-order scan of ``loci`` (ids and times only), sorted here: backfills need one fixed order."""
        from cassandra.query import SimpleStatement

        lo = -np.inf if since_mjd is None else since_mjd
        hi = np.inf if until_mjd is None else until_mjd
        stmt = SimpleStatement("SELECT locus_id, newest_mjd FROM loci", fetch_size=5000)
        rows = self._retry(lambda: list(self._session.execute(stmt, timeout=120)))
        return sorted(r.locus_id for r in rows if r.newest_mjd is not None and lo <= r.newest_mjd <= hi)

    def _backfill_table(self) -> None:
        if not getattr(self, "_backfill_ok", False):
            self._retry(lambda: self._session.execute(
                "CREATE TABLE IF NOT EXISTS backfill_runs (bucket int, run_id text, name text, started double, "
                "record text, PRIMARY KEY ((bucket), run_id))", timeout=60))
            self._backfill_ok = True

    def put_backfill_run(self, rec: dict[str, Any]) -> None:
        self._backfill_table()
        params = (rec["run_id"], rec["name"], rec.get("started"), dumps(rec))
        self._retry(lambda: self._session.execute(
            "INSERT INTO backfill_runs (bucket, run_id, name, started, record) VALUES (0, %s, %s, %s, %s)", params))

    def get_backfill_run(self, run_id: str) -> dict[str, Any] | None:
        self._backfill_table()
        row = self._retry(lambda: self._session.execute(
            "SELECT record FROM backfill_runs WHERE bucket=0 AND run_id=%s", (run_id,)).one())
        return loads(row.record) if row else None

    def list_backfill_runs(self, name: str | None = None) -> list[dict[str, Any]]:
        self._backfill_table()
        rows = self._retry(lambda: list(self._session.execute("SELECT record FROM backfill_runs WHERE bucket=0")))
        recs = [loads(r.record) for r in rows]
        return sorted((r for r in recs if name is None or r.get("name") == name),
                      key=lambda r: (r.get("started") or 0.0, r["run_id"]))

    # -- multi-messenger notices and events ----------------------------------------------
    def put_notice(self, record: dict[str, Any], skymap: bytes | None = None) -> None:
        """The map's chunks first, then the notice rows: a notice row is never read without its map."""
        nid, eid, rec = record["notice_id"], record["event_id"], dumps(record)
        if skymap is not None:
            chunks = [skymap[i : i + SKYMAP_CHUNK] for i in range(0, max(len(skymap), 1), SKYMAP_CHUNK)]
            stmt = getattr(self, "_ins_skymap", None)
            if stmt is None:
                stmt = self._ins_skymap = self._session.prepare(
                    "INSERT INTO notice_skymaps (notice_id, chunk, chunks, data) VALUES (?,?,?,?)")
            for k, c in enumerate(chunks):
                self._retry(lambda k=k, c=c: self._session.execute(stmt, (nid, k, len(chunks), c), timeout=60))
        self._retry(lambda: self._session.execute(
            "INSERT INTO notices_by_event (event_id, notice_id, record) VALUES (%s, %s, %s)", (eid, nid, rec)))
        self._retry(lambda: self._session.execute(
            "INSERT INTO notices (notice_id, event_id, record) VALUES (%s, %s, %s)", (nid, eid, rec)))

    def notices(self, event_id: str) -> list[dict[str, Any]]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT record FROM notices_by_event WHERE event_id=%s", (event_id,))))
        return sorted((loads(r.record) for r in rows), key=lambda r: r.get("order_key") or [])

    def notice(self, notice_id: str) -> dict[str, Any] | None:
        row = self._retry(lambda: self._session.execute(
            "SELECT record FROM notices WHERE notice_id=%s", (notice_id,)).one())
        return loads(row.record) if row else None

    def notice_skymap(self, notice_id: str) -> bytes | None:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT chunk, chunks, data FROM notice_skymaps WHERE notice_id=%s", (notice_id,), timeout=60)))
        if not rows:
            return None
        if len(rows) != rows[0].chunks:
            raise OSError(f"sky map of notice {notice_id}: {len(rows)} of {rows[0].chunks} chunks stored")
        return b"".join(bytes(r.data) for r in sorted(rows, key=lambda r: r.chunk))

    def put_event(self, record: dict[str, Any]) -> None:
        """The time-ordered row moves when an event's time changes: the old one is deleted first."""
        eid = record["event_id"]
        old = self.event(eid)
        rec, mjd, status = dumps(record), record.get("event_mjd"), record.get("status")
        if old is not None and old.get("event_mjd") != mjd and old.get("event_mjd") is not None:
            self._retry(lambda: self._session.execute(
                "DELETE FROM mm_events_by_time WHERE bucket=0 AND event_mjd=%s AND event_id=%s",
                (old["event_mjd"], eid)))
        if mjd is not None:
            self._retry(lambda: self._session.execute(
                "INSERT INTO mm_events_by_time (bucket, event_mjd, event_id, status, record) "
                "VALUES (0, %s, %s, %s, %s)", (mjd, eid, status, rec)))
        self._retry(lambda: self._session.execute(
            "INSERT INTO mm_events (event_id, event_mjd, status, record) VALUES (%s, %s, %s, %s)",
            (eid, mjd, status, rec)))

    def event(self, event_id: str) -> dict[str, Any] | None:
        row = self._retry(lambda: self._session.execute(
            "SELECT record FROM mm_events WHERE event_id=%s", (event_id,)).one())
        return loads(row.record) if row else None

    def events(self, since_mjd: float | None = None, until_mjd: float | None = None,
               status: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
        """One slice of the time-ordered partition (events are few: thousands a year)."""
        lo = -1e300 if since_mjd is None else float(since_mjd)
        hi = 1e300 if until_mjd is None else float(until_mjd)
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT status, record FROM mm_events_by_time WHERE bucket=0 AND event_mjd >= %s AND event_mjd <= %s",
            (lo, hi))))
        out = [loads(r.record) for r in rows if status is None or r.status == status]
        return out[:limit]

    def put_outgoing(self, record: dict[str, Any]) -> None:
        eid, num, rec = record["event_id"], int(record["record_number"]), dumps(record)
        self._retry(lambda: self._session.execute(
            "INSERT INTO mm_outgoing (event_id, record_number, record) VALUES (%s, %s, %s)", (eid, num, rec)))

    def outgoing(self, event_id: str) -> list[dict[str, Any]]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT record FROM mm_outgoing WHERE event_id=%s", (event_id,))))
        return [loads(r.record) for r in rows]  # clustered by record_number

    # -- reconstruction scans --------------------------------------------------------------
    def put_scan(self, record: dict[str, Any]) -> None:
        """Both rows carry the record: by id (reads), and in the one time-ordered partition (lists; scans are few)."""
        sid, status, created, rec = record["scan_id"], record.get("status"), float(record.get("created") or 0), \
            dumps(record)
        self._retry(lambda: self._session.execute(
            "INSERT INTO scans_by_created (bucket, created, scan_id, status, record) VALUES (0, %s, %s, %s, %s)",
            (created, sid, status, rec)))
        self._retry(lambda: self._session.execute(
            "INSERT INTO scans (scan_id, status, created, record) VALUES (%s, %s, %s, %s)",
            (sid, status, created, rec)))

    def scan(self, scan_id: str) -> dict[str, Any] | None:
        row = self._retry(lambda: self._session.execute(
            "SELECT record FROM scans WHERE scan_id=%s", (scan_id,)).one())
        return loads(row.record) if row else None

    def scans(self, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT status, record FROM scans_by_created WHERE bucket=0")))
        return [loads(r.record) for r in rows if status is None or r.status == status][:limit]

    def put_scan_pixels(self, scan_id: str, nside: int, rows: Any) -> None:
        if not hasattr(self, "_ins_scan_pixel"):
            self._ins_scan_pixel = self._session.prepare(
                "INSERT INTO scan_pixels (scan_id, nside, pixel, llh, e_in, e_tot) VALUES (?,?,?,?,?,?)")
        arr = np.asarray(rows, dtype=float).reshape(-1, 4)
        self._concurrent(self._ins_scan_pixel, [(scan_id, int(nside), int(r[0]), float(r[1]), float(r[2]),
                                                 float(r[3])) for r in arr])

    def scan_pixels(self, scan_id: str) -> dict[int, Any]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT nside, pixel, llh, e_in, e_tot FROM scan_pixels WHERE scan_id=%s", (scan_id,), timeout=60)))
        out: dict[int, list] = {}
        for r in rows:
            out.setdefault(int(r.nside), []).append([float(r.pixel), *(np.nan if v is None else float(v)
                                                                        for v in (r.llh, r.e_in, r.e_tot))])
        return {n: np.array(v, dtype=float).reshape(-1, 4) for n, v in out.items()}
    # -- the FAIR event catalog: lightweight transactions make every version write-once -------
    def _insert_once(self, insert: str, params: tuple, record: dict, what: str) -> bool:
        """``INSERT ... IF NOT EXISTS`` (SERIAL): of two racing publishers one wins, the other sees its row."""
        text = dumps(record)
        res = self._retry(lambda: self._session.execute(insert + " IF NOT EXISTS", (*params, text)))
        if res.was_applied:
            return True
        if res.one().record != text:
            raise CatalogConflict(f"{what} is already stored with other content (published versions are immutable)")
        return False

    def put_catalog_record(self, record: dict[str, Any]) -> bool:
        eid, version = record["event_id"], int(record["version"])
        return self._insert_once("INSERT INTO catalog_records (event_id, version, record) VALUES (%s, %s, %s)",
                                 (eid, version), record, f"catalog record {eid} v{version}")

    def catalog_records(self, event_id: str) -> list[dict[str, Any]]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT record FROM catalog_records WHERE event_id=%s", (event_id,))))
        return [loads(r.record) for r in rows]  # clustered by version

    def put_catalog_release(self, release: dict[str, Any]) -> bool:
        version = int(release["version"])
        return self._insert_once("INSERT INTO catalog_releases (bucket, version, record) VALUES (0, %s, %s)",
                                 (version,), release, f"catalog release v{version}")

    def catalog_releases(self) -> list[dict[str, Any]]:
        rows = self._retry(lambda: list(self._session.execute(
            "SELECT record FROM catalog_releases WHERE bucket=0")))
        return [loads(r.record) for r in rows]

    # -- claims --------------------------------------------------------------------------
    def claim_new_loci(self, candidates: Sequence[tuple[str, float, float]], radius_arcsec: float,
                       known: LocusPositions | None = None) -> dict[str, str]:
        """Compare-and-set per claim region (see the module docstring): one conditional batch per region.

        With ``known`` (association's read, at ``store.consistency``) the stored rows are not read
        again unless that consistency is weaker than a quorum: every locus founded since that read
        went through ``locus_claims``, which is always read.
        """
        if not candidates:
            return {}
        ra = np.array([c[1] for c in candidates], dtype=float)
        dec = np.array([c[2] for c in candidates], dtype=float)
        pix = pixels_of(ra, dec, self.association_order)
        block = neighbour_block(pix, self.association_order)
        home = pix >> self.claim_shift
        block_regions = np.where(block >= 0, block >> self.claim_shift, home[:, None])
        boundary = np.flatnonzero((block_regions != home[:, None]).any(axis=1))
        leased = sorted({-1 - int(r) for r in np.unique(block_regions[boundary])}) if boundary.size else []
        if leased:  # lease keys are negative: claim regions never collide with association-region leases
            self._acquire(leased)
        try:
            if known is not None and self._quorum_reads:
                stored = LocusPositions(list(known.locus_ids), known.ra, known.dec, known.pixel)
            else:
                stored = self.locus_positions(block[block >= 0].tolist(), _quorum=True)
            return self._claim_by_region(candidates, ra, dec, pix, block, block_regions, stored, radius_arcsec)
        finally:
            if leased:
                self._release(leased)

    def _claim_by_region(self, candidates: Sequence[tuple[str, float, float]], ra: np.ndarray, dec: np.ndarray,
                         pix: np.ndarray, block: np.ndarray, block_regions: np.ndarray, stored: LocusPositions,
                         radius_arcsec: float, timeout_s: float = 120.0) -> dict[str, str]:
        """Read claims, decide, conditional-write per home region; re-read the regions that lost the race."""
        from cassandra.query import BatchStatement, BatchType

        home = pix >> self.claim_shift
        winners: dict[str, str] = {}
        pending = np.arange(len(candidates))
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while pending.size:
            tokens, claimed = self._read_claims(block[pending], block_regions[pending])
            existing = _merge_positions(stored, claimed)
            cands = [candidates[i] for i in pending]
            won, to_write = resolve_claims(cands, existing, self.association_order, radius_arcsec)
            by_region: dict[int, list[int]] = {}
            for k in to_write:
                by_region.setdefault(int(home[pending[k]]), []).append(int(pending[k]))
            work, regions = [], []
            for region, members in by_region.items():
                batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=self._quorum)
                batch.add(self._cas_claims, (uuid.uuid4().hex, region, tokens.get(region)))
                batch.add(self._ins_claim, (region, _SENTINEL_PIXEL, "", None, None))
                for i in members:
                    batch.add(self._ins_claim, (region, int(pix[i]), candidates[i][0], float(ra[i]), float(dec[i])))
                work.append((batch, None))
                regions.append(region)
            lost = {r for r, res in zip(regions, self._concurrent_mixed(work), strict=True) if not res.was_applied}
            for k, i in enumerate(pending.tolist()):
                if int(home[i]) not in lost:
                    winners[candidates[i][0]] = won[cands[k][0]]
            pending = np.array([i for i in pending.tolist() if int(home[i]) in lost], dtype=np.int64)
            if pending.size:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not claim loci in {len(lost)} contended region(s) in {timeout_s:.0f}s")
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.2)
        # The winners' position rows, for association (also replays of a claim whose worker died
        # before writing them: those candidates find their own claim row and win again).
        rows = [(int(p) >> self.region_shift, int(p), c[0], float(r), float(d))
                for c, p, r, d in zip(candidates, pix.tolist(), ra.tolist(), dec.tolist(), strict=True)
                if winners[c[0]] == c[0]]
        self._concurrent_mixed(self._partition_batches(self._ins_pixel, rows, key=lambda r: r[0]))
        return winners

    def _read_claims(self, block: np.ndarray, block_regions: np.ndarray) -> tuple[dict[int, str | None], LocusPositions]:
        """The claims in these pixel blocks, and each claim region's token as read.

        Every query of a region asks for the sentinel row too, so each answer carries the token it
        was read under; a region whose queries saw different tokens (a claim landed between them)
        gets a token no conditional write will match, so its batch fails and is read again.
        """
        wanted: dict[int, set[int]] = {}
        for p, r in zip(block.ravel().tolist(), block_regions.ravel().tolist(), strict=True):
            if p >= 0:
                wanted.setdefault(int(r), set()).add(int(p))
        params, owners = [], []
        for region, pixels in wanted.items():
            members = sorted(pixels)
            for i in range(0, len(members), 99):
                params.append((region, [_SENTINEL_PIXEL, *members[i : i + 99]]))
                owners.append(region)
        seen: dict[int, set[str | None]] = {}
        ids, ras, decs, pixs = [], [], [], []
        for region, rs in zip(owners, self._concurrent(self._sel_claims, params), strict=True):
            rows = list(rs)
            seen.setdefault(region, set()).add(rows[0].claim_token if rows else None)
            for r in rows:
                if r.pixel != _SENTINEL_PIXEL:
                    ids.append(r.locus_id)
                    ras.append(r.ra)
                    decs.append(r.dec)
                    pixs.append(r.pixel)
        tokens = {r: (next(iter(t)) if len(t) == 1 else f"torn-read-{uuid.uuid4().hex}") for r, t in seen.items()}
        return tokens, LocusPositions(ids, np.array(ras, dtype=float), np.array(decs, dtype=float),
                                      np.array(pixs, dtype=np.int64))

    def _acquire(self, regions: list[int], timeout_s: float = 120.0) -> None:
        """Take the LWT lease of every region, all or none; back off and retry on contention."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            results = self._concurrent(self._lock_stmt, [(r, self._owner) for r in regions])
            got = [r for r, res in zip(regions, results, strict=True)
                   if res.was_applied or res.one().owner == self._owner]
            if len(got) == len(regions):
                return
            self._release(got)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not lock {len(regions) - len(got)} sky region(s) in {timeout_s:.0f}s")
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)

    def _release(self, regions: list[int]) -> None:
        self._concurrent(self._unlock, [(r, self._owner) for r in regions])

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _alert(r: Any) -> Alert:
        d = {c: getattr(r, c) for c in _ALERT_COLS}
        d["properties"] = loads(d["properties"])
        return alert_from_row(d)

    def drop_keyspace(self) -> None:
        """Delete all data (tests)."""
        self._session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=120)

    def close(self) -> None:
        self._cluster.shutdown()
