"""Every contract the pipeline is written against, in the order data flows.

The pipeline (:mod:`broker.pipeline`) and the worker loop (:mod:`broker.worker`) know these
ports and never a client library. Each port has an embedded adapter (files, SQLite: what
``albireo demo`` runs) and a production one (Kafka, Cassandra, Elasticsearch), both under
:mod:`broker.adapters` and both held to the same contract tests (``tests/contract``).
:mod:`broker.assemble` is the one place that picks adapters from the configuration.

=====================  ===========================================  =========================================
port                   where it sits in the flow                    adapters
=====================  ===========================================  =========================================
:class:`Source`        first: raw messages in, committed after      ``adapters.streams.files.FileSource``,
                       the batch's outputs are durable              ``adapters.streams.kafka.KafkaSource``
:class:`Store`         association reads loci; the store stage      ``adapters.storage.sqlite.SQLiteStore``,
                       writes loci, alerts, dead letters             ``adapters.storage.cassandra.CassandraStore``
:class:`CatalogMatcher` crossmatch: positions → catalog rows         ``broker.crossmatch.CatalogSet``
:class:`FilterRunner`  filters: loci → tags and properties           ``broker.filtering.platform.PlatformRunner``
:class:`Sink`          emit: tagged streams and dead letters         ``adapters.streams.files.StreamFileSink``,
                                                                    ``adapters.streams.kafka.KafkaSink``
:class:`TransactionalSink` emit + commit in one transaction          ``adapters.streams.kafka.KafkaSink``
:class:`IndexWriter`   last: locus documents towards the index       ``adapters.outbox.IndexWriter``
:class:`Index`         read by the portal and API                   ``adapters.search.sqlite.SQLiteIndex``,
                                                                    ``adapters.search.elasticsearch.ElasticsearchIndex``
:class:`StreamAccess`  beside emit: who may read the tagged          ``adapters.streams.kafka_access.KafkaStreamAccess``
                       streams (credentials and ACLs)               (``broker.access.NoStreamAccess`` records only)
:class:`SkymapFetcher` multi-messenger: a notice's ``healpix_url``   ``adapters.http.HttpSkymapFetcher``
:class:`BatchProcessor` what a :class:`~broker.worker.Worker` runs:  ``broker.pipeline.Pipeline`` (alerts),
                       a batch of messages in, a result out          ``broker.multimessenger.stage.NoticePipeline``
=====================  ===========================================  =========================================

Writes are idempotent (alert and locus ids are keys), and a source is committed only after the
sink acknowledged the outputs and the store holds the batch: a crash anywhere replays the batch
and changes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from broker.alert import Alert
from broker.association import LocusPositions
from broker.locus import Locus

if TYPE_CHECKING:
    from broker.filtering.runner import RunReport
    from broker.metrics import Metrics

__all__ = [
    "AccessRule", "BatchProcessor", "CatalogConflict", "CatalogMatcher", "DeadLetter", "DeliveryError", "EventQuery", "FilterRunner",
    "Index", "IndexWriter", "LocusQuery", "IndexSummary", "Message", "Output", "QueryError", "Rebalanced",
    "SearchResult", "Sink", "SkyRegion", "SkymapFetcher", "Source", "Store", "StreamAccess", "TransactionOffsets",
    "TransactionalSink", "TransactionalSource",
]


# =========================================================================== streams: in and out
@dataclass
class Message:
    """One raw input message and where it came from (for commits and dead letters)."""

    value: bytes
    source: str  # topic or file path
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{self.source}[{self.partition}]@{self.offset}"


class Source(abc.ABC):
    @abc.abstractmethod
    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages; an empty list means nothing arrived in time."""

    def commit(self, messages: list[Message]) -> None:  # noqa: B027 - files need no commit
        """Mark ``messages`` processed (the next start resumes after them)."""

    @property
    def ready(self) -> bool:
        """False while the source is still joining (a consumer group rebalance)."""
        return True

    @property
    def exhausted(self) -> bool:
        """True when a finite source has nothing left (files); never for Kafka."""
        return False

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet read per assigned (topic, partition); empty when the source cannot tell."""
        return {}

    def rewind(self, messages: list[Message]) -> None:  # noqa: B027 - files are read once
        """Make ``messages`` be delivered again (after a dropped batch), where the source still owns them."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class Sink(abc.ABC):
    @abc.abstractmethod
    def publish(self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None) -> None:
        """Queue one message for ``topic``."""

    @abc.abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued message is acknowledged; raise if any failed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


@dataclass(frozen=True)
class Output:
    """One message the pipeline publishes, with the input message (``origin``) that caused it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    #: the input message's position (``Message.origin``); "" when it has none.
    origin: str = ""


class DeliveryError(RuntimeError):
    """Some output messages were not acknowledged; the batch must not be committed."""


class Rebalanced(DeliveryError):
    """The batch's commit failed because the consumer group moved on: drop the batch and poll again.

    Its partitions may belong to another worker now, which reads the uncommitted messages again.
    """

@dataclass(frozen=True)
class TransactionOffsets:
    """What a transactional sink commits for a source: the next offset per partition, and the group.

    ``group_metadata`` is opaque to everyone but the two Kafka adapters (the consumer group's
    generation, which lets the broker fence a zombie worker).
    """

    offsets: tuple[tuple[str, int, int], ...]
    group_metadata: Any = None


class TransactionalSource(Source):
    """A source whose commit can be part of a sink's transaction (Kafka exactly-once)."""

    @abc.abstractmethod
    def transaction_offsets(self, messages: list[Message]) -> TransactionOffsets:
        """The offsets (and group) that committing ``messages`` stores."""


class TransactionalSink(Sink):
    """A sink whose outputs and the input offsets commit atomically (``read_committed`` readers see once)."""

    @abc.abstractmethod
    def commit_transaction(self, offsets: TransactionOffsets) -> None:
        """Commit every output published since the last commit together with ``offsets``."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop every output published since the last commit (the batch will be retried)."""


# =========================================================================== the store
@dataclass
class DeadLetter:
    """A message that could not be processed, kept whole with the reason.

    ``source`` is where the message came from (``topic[partition]@offset`` or ``file[0]@index``);
    with the payload it names the letter (:attr:`key`), so the same message rejected again (a
    replay, a re-ingested file) is stored once.
    """

    source: str
    reason: str
    message: str
    payload: bytes
    received_at: float
    headers: dict[str, str]

    @staticmethod
    def key_for(source: str, payload: bytes) -> str:
        """SHA-256 of the origin and the bytes: one message, one key, whatever the attempt."""
        import hashlib

        h = hashlib.sha256(source.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update(payload)
        return h.hexdigest()

    @property
    def key(self) -> str:
        return self.key_for(self.source, self.payload)


class Store(abc.ABC):
    """Persistent state shared by every worker of a consumer group."""

    #: the HEALPix order of the ``pixel`` column used for association lookups.
    association_order: int

    @abc.abstractmethod
    def locus_positions(self, pixels: Iterable[int]) -> LocusPositions:
        """Every locus whose association pixel is in ``pixels``, once each, at its current position.

        A locus's position is the mean of its detections and moves as alerts join it; its
        association pixel is that of its current position (``save_batch`` moves it), so the
        3×3 block around an alert's pixel always holds every locus within the radius.
        A claimed locus not stored yet is at its claimed position.
        """

    @abc.abstractmethod
    def load_loci(self, locus_ids: Iterable[str], with_alerts: bool = True) -> dict[str, Locus]:
        """Loci by id, with their alerts (time-ordered) unless ``with_alerts`` is False."""

    @abc.abstractmethod
    def existing_alert_ids(self, alerts: Iterable[Alert]) -> set[str]:
        """The ids of those of ``alerts`` already stored.

        Alerts rather than bare ids: a store may look alerts up by their survey object, one read
        per object instead of one per alert (a ZTF packet carries tens of history rows of one
        object). An alert is found under the object it was stored with.
        """

    @abc.abstractmethod
    def save_batch(
        self, loci: list[Locus], new_alerts: list[Alert], cutouts: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        """Upsert ``loci`` (position and its pixel, properties, tags, catalog matches, provenance), then
        insert ``new_alerts``. A locus whose position crossed into another association pixel moves
        there (``Locus.stored_position`` says where its row was)."""

    @abc.abstractmethod
    def alerts_for_locus(self, locus_id: str) -> list[Alert]:
        """The alerts of one locus, oldest first."""

    @abc.abstractmethod
    def cutouts(self, alert_id: str) -> dict[str, bytes]:
        """Stamp name → FITS bytes for one alert (empty when it had none)."""

    @abc.abstractmethod
    def record_dead_letter(self, letter: DeadLetter) -> bool:
        """Keep a rejected message, once per :attr:`DeadLetter.key`; True if it was not kept yet."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent dead letters first."""

    @abc.abstractmethod
    def iter_loci(self, batch_size: int = 500, since_mjd: float | None = None,
                  until_mjd: float | None = None) -> Iterator[list[Locus]]:
        """All loci (with alerts) whose newest alert lies in the window, in batches (backfills)."""

    @abc.abstractmethod
    def claim_new_loci(self, candidates: Sequence[tuple[str, float, float]], radius_arcsec: float,
                       known: LocusPositions | None = None) -> dict[str, str]:
        """Atomically create the position rows of new loci, unless another worker got there first.

        ``candidates`` are ``(locus_id, ra, dec)`` of loci the caller wants to found (its own
        association found nothing within ``radius_arcsec``). Under a lock covering every
        candidate's 3×3 association-pixel block, each candidate is re-checked against the stored
        and already claimed loci: if one lies within the radius, the nearest wins; otherwise the
        candidate's position row is written and it wins. Candidates of one call do not compete:
        the caller's association already kept them apart (loci move, so two founded in one
        batch may have founders closer than the radius). Returns candidate id → winning locus
        id (itself when it won). Replaying a claim returns the same answer.

        ``known``: stored positions the caller has just read (:meth:`locus_positions`, at the
        store's consistency) for blocks covering every candidate's, as association does before it
        claims. An adapter whose claims are serialised by their own records (Cassandra's claim
        regions) may check against these instead of reading the stored rows again; loci founded
        since that read are claims, which it always reads. Adapters may ignore it.
        """

    @abc.abstractmethod
    def record_outputs(self, by_origin: dict[str, list[Output]]) -> None:
        """Keep what each input message produced (replacing any earlier record of that message).

        Exactly-once support: written before the batch's alert rows, so a batch stored whose Kafka
        transaction then failed can re-emit the same outputs when its messages are read again.
        Records expire (``store.outputs_ttl_s``): only uncommitted positions ever need them.
        """

    @abc.abstractmethod
    def recorded_outputs(self, origins: Iterable[str]) -> dict[str, list[Output]]:
        """The recorded outputs of these input positions (absent positions are left out)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """``loci``, ``alerts``, ``dead_letters`` row counts (for status pages and tests)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- the filter registry: revisions kept beside the loci, so every worker sees the same ones --------
    @abc.abstractmethod
    def put_filter_revision(self, rec: dict[str, Any]) -> None:
        """Insert or replace one filter revision (keyed by name and revision; fields: FILTER_REVISION_FIELDS)."""

    @abc.abstractmethod
    def list_filter_revisions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Revisions of filter ``name`` (every filter when None), oldest first."""

    @abc.abstractmethod
    def set_filter_status(self, name: str, revision: str, status: str, reason: str = "",
                          at: float | None = None) -> None:
        """Change one revision's status (``submitted``, ``approved``, ``rejected``, ``enabled``, ``disabled``) and say why."""

    # -- backfill runs (``albireo filter backfill --write``): each run's checkpoint, for ``--resume`` ------
    @abc.abstractmethod
    def locus_ids(self, since_mjd: float | None = None, until_mjd: float | None = None) -> list[str]:
        """Ids of the loci whose newest alert lies in [since_mjd, until_mjd], sorted (a deterministic order)."""

    @abc.abstractmethod
    def put_backfill_run(self, rec: dict[str, Any]) -> None:
        """Insert or replace one backfill run's record (keyed by ``run_id``; a JSON-able dict)."""

    @abc.abstractmethod
    def get_backfill_run(self, run_id: str) -> dict[str, Any] | None:
        """One backfill run's record, None when unknown."""

    @abc.abstractmethod
    def list_backfill_runs(self, name: str | None = None) -> list[dict[str, Any]]:
        """Backfill runs (of filter ``name``, every filter when None), oldest first."""

    # -- multi-messenger notices and events (``broker.multimessenger``) -------------------------------
    @abc.abstractmethod
    def put_notice(self, record: dict[str, Any], skymap: bytes | None = None) -> None:
        """Insert or replace one notice (keyed by ``notice_id``; fields: ``Notice.record()``) and its sky map."""

    @abc.abstractmethod
    def notices(self, event_id: str) -> list[dict[str, Any]]:
        """Every stored notice (revision) of an event, oldest first by ``order_key``."""

    @abc.abstractmethod
    def notice(self, notice_id: str) -> dict[str, Any] | None:
        """One notice record by id."""

    @abc.abstractmethod
    def notice_skymap(self, notice_id: str) -> bytes | None:
        """The FITS bytes of a notice's sky map (embedded or downloaded), None when it has none."""

    @abc.abstractmethod
    def put_event(self, record: dict[str, Any]) -> None:
        """Insert or replace an event's current state (keyed by ``event_id``; see ``multimessenger.revisions``)."""

    @abc.abstractmethod
    def event(self, event_id: str) -> dict[str, Any] | None:
        """One event record by id."""

    @abc.abstractmethod
    def events(self, since_mjd: float | None = None, until_mjd: float | None = None,
               status: str | None = None, limit: int = 10000) -> list[dict[str, Any]]:
        """Events whose ``event_mjd`` lies in the window (and with ``status`` when given), oldest first."""

    @abc.abstractmethod
    def put_outgoing(self, record: dict[str, Any]) -> None:
        """Insert or replace one revision of an event's outgoing alerts (keyed by ``event_id``, ``record_number``).

        Revisions are never rewritten by a later one: each number is its own row (see
        ``multimessenger.outgoing``).
        """

    @abc.abstractmethod
    def outgoing(self, event_id: str) -> list[dict[str, Any]]:
        """Every stored revision of an event's outgoing alerts, by ``record_number``."""

    # -- reconstruction scans (``broker.multimessenger.scans``) ----------------------------------------
    @abc.abstractmethod
    def put_scan(self, record: dict[str, Any]) -> None:
        """Insert or replace one scan record (keyed by ``scan_id``; the manifest lives inside it).

        Kept in the store so that the API, the scan server and the workers can be separate processes.
        """

    @abc.abstractmethod
    def scan(self, scan_id: str) -> dict[str, Any] | None:
        """One scan record by id."""

    @abc.abstractmethod
    def scans(self, status: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Scan records (with ``status`` when given), newest ``created`` first."""

    @abc.abstractmethod
    def put_scan_pixels(self, scan_id: str, nside: int, rows: Any) -> None:
        """Upsert pixel results ``(n, 4)``: pixel, llh, E_in, E_tot; keyed by (scan, nside, pixel): a
        redelivered result rewrites the same row (NaN kept as NaN)."""

    @abc.abstractmethod
    def scan_pixels(self, scan_id: str) -> dict[int, Any]:
        """nside → ``(n, 4)`` float array of the stored pixel results of a scan, by pixel."""
    # -- the FAIR event catalog (``broker.multimessenger.catalog``): immutable versions ---------------
    @abc.abstractmethod
    def put_catalog_record(self, record: dict[str, Any]) -> bool:
        """Insert one version of an event's catalog record (keyed by ``event_id``, ``version``), never replacing one.

        True when written; False when exactly this record is already stored (a replay); raises
        :class:`CatalogConflict` when another record holds that key (two publishers raced): a
        published version is immutable, so the store refuses to rewrite it.
        """

    @abc.abstractmethod
    def catalog_records(self, event_id: str) -> list[dict[str, Any]]:
        """Every stored version of an event's catalog record, oldest (version 1) first."""

    @abc.abstractmethod
    def put_catalog_release(self, release: dict[str, Any]) -> bool:
        """Insert one published catalog version (keyed by ``version``) under the same rule as records."""

    @abc.abstractmethod
    def catalog_releases(self) -> list[dict[str, Any]]:
        """Every published catalog version, oldest first."""


class CatalogConflict(ValueError):
    """A catalog record or release with this key already exists with other content: published versions are immutable."""


# =========================================================================== the index
class QueryError(ValueError):
    """A query the index cannot or will not run (bad shape, too large, needs another backend)."""


@dataclass
class SkyRegion:
    """A sky region as HEALPix nested pixel ranges ``[lo, hi)`` at ``depth`` (a MOC, flattened).

    Backends answer with every locus whose position lies in a range (a superset of the region
    is fine: the caller re-checks exactly); ``MAX_REGION_RANGES`` bounds the query size.
    """

    depth: int
    ranges: list[tuple[int, int]]


@dataclass
class LocusQuery:
    """A structured locus search every backend supports."""

    #: (ra_deg, dec_deg, radius_deg) cone.
    cone: tuple[float, float, float] | None = None
    #: loci inside this HEALPix region (a credible region's MOC).
    region: SkyRegion | None = None
    #: loci must carry all of these tags.
    tags: list[str] = field(default_factory=list)
    #: property name → (low, high), inclusive; None for an open end.
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: property name → exact keyword value (e.g. ``ztf_object_id``).
    terms: dict[str, str] = field(default_factory=dict)
    #: loci inside every one of these multi-messenger events (GraceDB or neutrino event ids).
    events: list[str] = field(default_factory=list)
    #: a property name, ``-`` prefix for descending.
    sort: str = "-newest_alert_observation_time"
    limit: int = 100
    #: opaque cursor from the previous page's ``SearchResult.next_cursor``.
    search_after: list[Any] | None = None
    #: a raw Elasticsearch body (``{"query": ...}``); only the Elasticsearch backend runs it.
    raw: dict[str, Any] | None = None


@dataclass
class EventQuery:
    """A search of multi-messenger events (newest event time first)."""

    messenger: str | None = None
    #: ``active`` or ``retracted``; None for both.
    status: str | None = None
    include_test: bool = True
    since_mjd: float | None = None
    until_mjd: float | None = None
    limit: int = 100


@dataclass
class IndexSummary:
    """What the home page and ``/v2/loci/statistics`` show about the whole index."""

    count: int
    tags: dict[str, int]
    catalogs: dict[str, int]
    #: multi-messenger event id → loci listing it.
    events: dict[str, int]
    min_num_alerts: int
    max_num_alerts: int


@dataclass
class SearchResult:
    hits: list[dict[str, Any]]
    total: int
    next_cursor: list[Any] | None = None


class Index(abc.ABC):
    @abc.abstractmethod
    def upsert(self, docs: list[dict[str, Any]]) -> None:
        """Insert or replace documents by ``locus_id`` (idempotent)."""

    @abc.abstractmethod
    def search(self, query: LocusQuery) -> SearchResult:
        """Run a structured (or, where supported, raw) query."""

    @abc.abstractmethod
    def get(self, locus_id: str) -> dict[str, Any] | None:
        """One document by id."""

    @abc.abstractmethod
    def tag_counts(self) -> dict[str, int]:
        """How many loci carry each tag."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many documents the index holds."""

    @abc.abstractmethod
    def summary(self) -> IndexSummary:
        """Index-wide counts in one request: per tag, catalog and multi-messenger event, and the alert range."""

    @abc.abstractmethod
    def random_ids(self, n: int, seed: int | None = None) -> list[str]:
        """Up to ``n`` distinct locus ids drawn uniformly at random (the same draw for the same ``seed``).

        Why in the port: a sample of the whole index, not a page of a sorted search (what
        ``antares_client.search.get_random_locus_ids`` returns), is what a random pick means.
        """

    # -- multi-messenger events: one document per event (what the event list pages through) ---------
    @abc.abstractmethod
    def upsert_events(self, docs: list[dict[str, Any]]) -> None:
        """Insert or replace event documents by ``event_id`` (idempotent)."""

    @abc.abstractmethod
    def search_events(self, query: EventQuery) -> SearchResult:
        """Events matching ``query``, newest ``event_mjd`` first."""

    @abc.abstractmethod
    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """One event document by id."""

    def refresh(self) -> None:  # noqa: B027 - optional hook
        """Make recent writes visible to searches (Elasticsearch refresh)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class IndexWriter(abc.ABC):
    """The pipeline's last stage: hands each batch's touched loci towards the index.

    The adapter (``adapters.outbox.IndexWriter``) makes them durable first and delivers them in
    the background, so an index outage delays documents and never blocks ingestion.
    """

    @abc.abstractmethod
    def write(self, loci: list[Locus]) -> None:
        """Queue the documents of ``loci`` (durably) for the index."""

    @abc.abstractmethod
    def write_events(self, events: list[dict[str, Any]]) -> None:
        """Queue the documents of multi-messenger event records (durably) for the index."""

    @abc.abstractmethod
    def close(self, timeout: float = 120.0) -> bool:
        """Deliver what is queued (up to ``timeout`` s); True when nothing is left."""


# =========================================================================== stages with state
@runtime_checkable
class CatalogMatcher(Protocol):
    """The crossmatch stage's catalogs: positions in, per-position catalog rows out.

    ``version`` changes whenever the catalog set does, so loci matched against an older set are
    matched again (positions do not move; nothing else triggers a re-match).
    """

    @property
    def version(self) -> str: ...

    def match(self, ra: Any, dec: Any) -> list[dict[str, list[dict[str, Any]]]]:
        """For each position, catalog name → matching rows (with ``match_distance_arcsec``)."""
        ...


@runtime_checkable
class FilterRunner(Protocol):
    """The filter stage: runs every enabled filter over a round of loci, in priority order.

    Effects (tags, properties with provenance) are applied to the loci in place; the report says
    which tags each locus gained in this round (what emit publishes) and which filters failed.
    """

    def run(self, loci: list[Locus]) -> RunReport: ...

    def prepare(self) -> None:
        """Load every filter now (the worker calls it before its first batch), not inside a batch."""
        ...

    def export_metrics(self, metrics: Metrics) -> None:
        """Publish per-filter counters (runs, errors, time) into ``metrics``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SkymapFetcher(Protocol):
    """Downloads a notice's ``healpix_url`` (the only network call of the multi-messenger stage).

    Raises ``OSError`` (unreachable, timed out, too large, not FITS); the stage then keeps the
    notice's circle, if it has one, and says so.
    """

    def fetch(self, url: str) -> bytes: ...


@runtime_checkable
class BatchProcessor(Protocol):
    """What a worker runs over each polled batch: the alert pipeline, or the notice pipeline.

    ``process`` turns data failures into dead letters itself; ``dead_letter`` rejects whole messages
    the worker could not get through ``process`` (a bug met by some message).
    """

    metrics: Metrics
    #: failure injection for the fault tests (``broker.faults.FaultPlan``); None in production.
    faults: Any

    def prepare(self) -> None:
        """Get ready before the first batch (load filters), so no batch pays for it."""
        ...

    def process(self, messages: list[Message]) -> Any: ...

    def dead_letter(self, messages: list[Message], reason: str, text: str) -> Any: ...


@runtime_checkable
class DecodingProcessor(BatchProcessor, Protocol):
    """A batch processor whose first stage reads nothing but the bytes (the alert pipeline).

    ``decode`` may run in another thread, on the next batch, while ``process`` runs the current one;
    ``process(messages, decoded)`` then skips its own decoding.
    """

    def decode(self, messages: list[Message]) -> Any: ...

    def process(self, messages: list[Message], decoded: Any = None) -> Any: ...


# =========================================================================== who may read the streams
@dataclass(frozen=True, order=True)
class AccessRule:
    """One thing a principal may do on the stream broker: ``operation`` on a ``resource`` named by ``pattern``.

    ``resource``: ``topic``, ``group`` or ``transactional_id``; ``pattern``: ``literal`` or
    ``prefixed``; ``operation``: ``read``, ``write``, ``create`` or ``describe``.
    """

    resource: str
    name: str
    pattern: str
    operation: str


class StreamAccess(abc.ABC):
    """Where consumers of the tagged streams authenticate and what they may read, enforced by the broker.

    Sits beside emit: the pipeline publishes every stream; this port decides who may consume it.
    The Kafka adapter keeps one password per user valid for both SASL mechanisms of the consumer
    listener (SCRAM-SHA-512 and PLAIN) and turns rules into ACLs; nothing is allowed without a rule.
    """

    @abc.abstractmethod
    def set_password(self, user: str, password: str) -> None:
        """Make ``password`` the user's one credential (every mechanism at once)."""

    @abc.abstractmethod
    def delete_user(self, user: str) -> None:
        """Remove the user's credentials and every rule that names them."""

    @abc.abstractmethod
    def allow(self, user: str, rules: Sequence[AccessRule]) -> None:
        """Add rules (idempotent)."""

    @abc.abstractmethod
    def disallow(self, user: str, rules: Sequence[AccessRule]) -> None:
        """Remove exactly these rules (others stay)."""

    @abc.abstractmethod
    def rules(self, user: str) -> list[AccessRule]:
        """The rules the broker holds for ``user`` now (to compare with the records)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
