"""The pipeline: one batch of raw messages in, loci stored and tagged streams out.

Stages (each timed into ``albireo_stage_seconds{stage=...}``):

decode → validate → dedupe → associate → load loci → add alerts → crossmatch →
multimessenger (coincidences with active neutrino/GW localizations) → filters → emit (tag streams +
dead letters, acknowledged) → store → index.

The pipeline owns no client library: it is handed a :class:`~broker.storage.base.Store`,
a :class:`~broker.ports.Sink`, optionally an index writer and a catalog
set. The same code runs embedded (SQLite + files) and in production (Cassandra,
Elasticsearch, Kafka).

Ordering is what makes a crash harmless. Outputs are published and acknowledged
*before* the store write, and the store writes loci before alerts; the input
offsets are committed by the worker only after all of it. A batch replayed after
a crash therefore recomputes the same loci (properties are recomputed from the
alert list, ids are deterministic) and the store ends identical; downstream
consumers may see an output twice (at-least-once) unless the Kafka sink is
transactional.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from broker.alert import Packet
from broker.association import Associator, LocusPositions
from broker.emit import StreamRouter
from broker.faults import FaultPlan
from broker.filtering.runner import RunReport
from broker.ingest.decode import decode_message
from broker.ingest.framing import DecodeError
from broker.ingest.validate import validate_packet
from broker.locus import Locus, make_locus_id, survey_object_key
from broker.metrics import Metrics
from broker.multimessenger.coincidence import CoincidenceStage
from broker.ports import CatalogMatcher, DeadLetter, FilterRunner, IndexWriter, Message, Output, Sink, Store

log = logging.getLogger("albireo.pipeline")


@dataclass
class BatchResult:
    """What one batch did; the worker adds these up for its summary."""

    #: messages read; each one is decoded into packets, or empty, or rejected (a dead letter).
    messages: int = 0
    #: messages that held no alert (an Avro container with a header and zero records): skipped.
    empty: int = 0
    #: packets decoded; each one is new (ingested) or a duplicate of one already stored.
    packets: int = 0
    #: alert rows this batch added to the store (triggers and history, each alert once).
    alerts_new: int = 0
    duplicates: int = 0
    #: reason → messages dead-lettered for it.
    rejected: Counter = field(default_factory=Counter)
    #: dead letters the store did not hold yet (a replayed bad message is rejected again, stored once).
    dead_letters_new: int = 0
    loci_created: int = 0
    loci_updated: int = 0
    crossmatched: int = 0
    tags: Counter = field(default_factory=Counter)
    filter_errors: int = 0
    published: int = 0
    #: outputs of already stored packets re-emitted because their transaction had not committed.
    reemitted: int = 0
    #: reason → history rows dropped from otherwise good packets (NaN, implausible, after the trigger).
    history_dropped: Counter = field(default_factory=Counter)

    def add(self, other: BatchResult) -> None:
        for name in ("messages", "empty", "packets", "alerts_new", "duplicates", "dead_letters_new", "loci_created",
                     "loci_updated", "crossmatched", "filter_errors", "published", "reemitted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected.update(other.rejected)
        self.tags.update(other.tags)
        self.history_dropped.update(other.history_dropped)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class _Decoded:
    message: Message
    packet: Packet


@dataclass
class DecodedBatch:
    """What :meth:`Pipeline.decode` made of one batch of messages (the input of :meth:`Pipeline.process`)."""

    messages: list[Message]
    #: the decode stage's counts (messages, empty, packets, rejected, history rows dropped).
    result: BatchResult
    packets: list[_Decoded]
    letters: list[DeadLetter]


class Pipeline:
    """Composes the stages over the adapters it is given."""

    def __init__(
        self,
        store: Store,
        sink: Sink,
        filters: FilterRunner,
        associator: Associator,
        output_prefix: str = "albireo.loci.",
        dead_letter_topic: str = "albireo.dlq",
        index_writer: IndexWriter | None = None,
        catalogs: CatalogMatcher | None = None,
        metrics: Metrics | None = None,
        lsst_schema_version: str | None = None,
        ztf_schema_version: str | None = None,
        schema_registry: Callable[[int], dict] | None = None,
        exactly_once: bool = False,
        faults: FaultPlan | None = None,
        router: StreamRouter | None = None,
        coincidence: CoincidenceStage | None = None,
    ):
        self.store = store
        self.sink = sink
        self.filters = filters
        self.associator = associator
        self.output_prefix = output_prefix
        #: which topic(s) and encoding each tagged stream is published with (default: our Avro only).
        self.router = router or StreamRouter(output_prefix=output_prefix)
        self.dead_letter_topic = dead_letter_topic
        self.index_writer = index_writer
        self.catalogs = catalogs
        self.metrics = metrics or Metrics()
        for name in ("messages", "alerts_ingested", "loci_created", "loci_updated", "duplicates", "crossmatched",
                     "filter_errors", "batch_retries", "empty_messages", "dead_letters_stored"):
            self.metrics.declare("counter", name)
        self.metrics.declare("counter", "rejected", "reason")
        self.metrics.declare("counter", "dead_letters", "reason")
        self.metrics.declare("counter", "published", "stream")
        self.metrics.declare("histogram", "stage_seconds", "stage")
        self.metrics.declare("histogram", "filter_seconds", "filter")
        self.metrics.declare("gauge", "consumer_lag", "partition", "topic")
        self.lsst_schema_version = lsst_schema_version or None
        self.ztf_schema_version = ztf_schema_version or None
        self.schema_registry = schema_registry
        #: re-emit the recorded outputs of a stored packet that is read again (transactional sinks).
        self.exactly_once = exactly_once
        #: failure injection for the fault tests (:mod:`broker.faults`); None in production.
        self.faults = faults
        self._message_of: dict[str, Message] = {}
        #: ids of this batch's alerts (triggers and history) the store already held (see _dedupe).
        self._stored_ids: set[str] = set()
        self._outputs: list[Output] = []
        #: the multi-messenger stage (``broker.multimessenger.coincidence``); None: no coincidences.
        self.coincidence = coincidence

    # ------------------------------------------------------------------------------------
    def decode(self, messages: list[Message]) -> DecodedBatch:
        """Decode and validate ``messages``: the one stage that reads nothing but the bytes.

        It touches no store, sink or filter and no state of this pipeline, so the worker may run
        it for the next batch in a thread while this batch is in the later stages
        (``kafka.decode_ahead``; off, as on a 2-core machine it did not pay: docs/operations.md).
        """
        res = BatchResult(messages=len(messages))
        with self.metrics.time("decode"):
            decoded, letters = self._decode(messages, res)
        return DecodedBatch(messages, res, decoded, letters)

    def process(self, messages: list[Message], decoded: DecodedBatch | None = None) -> BatchResult:
        """Run ``messages`` through every stage; ``decoded``: what :meth:`decode` made of them already."""
        if decoded is None or decoded.messages is not messages:
            decoded = self.decode(messages)
        # the counts copied, so that handing the same decoded batch in twice cannot count it twice
        res = BatchResult(messages=len(messages), empty=decoded.result.empty, packets=decoded.result.packets,
                          rejected=Counter(decoded.result.rejected),
                          history_dropped=Counter(decoded.result.history_dropped))
        m = self.metrics
        m.inc("messages", len(messages))
        decoded, letters = list(decoded.packets), decoded.letters
        # Which input message each trigger came from: its outputs are recorded under that message's
        # position (exactly-once re-emission) and carry its produce time (``albireo.source_ts``, latency).
        self._message_of = {d.packet.trigger.alert_id: d.message for d in decoded}
        self._outputs = []
        self._stored_ids = set()
        with m.time("dedupe"):
            decoded = self._dedupe(decoded, res)
        with m.time("associate"):
            loci, new_ids, groups = self._associate(decoded)
        with m.time("crossmatch"):
            self._crossmatch(list(loci.values()), res)
        mm_tags: dict[tuple[str, str], set[str]] = {}
        if self.coincidence is not None:
            with m.time("multimessenger"):
                mm_tags = self.coincidence.run(loci, groups)
        new_alerts = self._rounds(loci, groups, res, mm_tags)
        self._fault("before_publish")
        with m.time("emit"):
            # Every output is published here, at the end: a transactional sink's transaction then spans
            # only emit + store + commit, not the filters (a long transaction is fenced by the broker).
            for letter in letters:
                self.sink.publish(self.dead_letter_topic, None, letter.payload, letter.headers)
                m.inc("dead_letters", reason=letter.reason)
            for out in self._outputs:
                self.sink.publish(out.topic, out.key, out.value, out.headers)
            self.sink.flush()
        self._fault("after_publish")
        touched = [loci[lid] for lid in groups]
        with m.time("store"):
            if self.exactly_once:
                # Before the alert rows (which mark a packet done): a retry that finds the packet stored
                # re-emits exactly these outputs instead of skipping them (see _dedupe).
                self.store.record_outputs(_by_origin(self._outputs, [d.message.origin for d in decoded]))
            cutouts = {d.packet.trigger.alert_id: d.packet.cutouts for d in decoded if d.packet.cutouts}
            self.store.save_batch(touched, new_alerts, cutouts)
            res.dead_letters_new += sum(bool(self.store.record_dead_letter(letter)) for letter in letters)
        self._fault("after_store")
        if self.index_writer is not None:
            with m.time("index"):
                self.index_writer.write(touched)
        res.alerts_new = len(new_alerts)
        res.loci_created = len(new_ids)
        res.loci_updated = len(touched) - len(new_ids)
        m.inc("alerts_ingested", res.alerts_new)
        m.inc("loci_created", res.loci_created)
        m.inc("loci_updated", res.loci_updated)
        m.inc("duplicates", res.duplicates)
        m.inc("empty_messages", res.empty)
        m.inc("dead_letters_stored", res.dead_letters_new)
        self.filters.export_metrics(m)
        return res

    def prepare(self) -> None:
        """Load the filters before the first batch (a sandbox start inside a transaction would lengthen it)."""
        self.filters.prepare()

    def _fault(self, point: str) -> None:
        if self.faults is not None:
            self.faults.hit(point)

    def _rounds(self, loci: dict[str, Locus], groups: dict[str, list[Packet]], res: BatchResult,
                mm_tags: dict[tuple[str, str], set[str]] | None = None) -> list:
        """Add each locus's packets one at a time and run the filters after each, as ANTARES does.

        Filters see ``locus.alert`` = the packet being ingested with the light curve
        up to it. A batch rarely holds two packets of one locus (they come minutes
        apart), so this is usually a single round over the whole batch; a replayed
        history takes one round per packet of the busiest locus.

        Every alert is added to one locus only, so that each locus's ``num_alerts`` counts the
        rows the store holds for it: a trigger goes to the locus it was associated with (and
        never as a copy from another packet's history), a history alert to the first locus that
        takes it in this batch (neighbouring loci's packets share history rows).
        """
        new_alerts = []
        all_triggers = {p.trigger.alert_id for packets in groups.values() for p in packets}
        owner: dict[str, str] = {}
        n_rounds = max((len(g) for g in groups.values()), default=0)
        for r in range(n_rounds):
            active = []
            round_trigger: dict[str, str] = {}  # locus → the trigger of its packet in this round
            round_mm: dict[str, set[str]] = {}
            with self.metrics.time("associate"):
                for lid, packets in groups.items():
                    if r < len(packets):
                        p = packets[r]
                        locus = loci[lid]
                        history = [h for h in p.history
                                   if h.alert_id not in all_triggers and owner.setdefault(h.alert_id, lid) == lid]
                        new_alerts.extend(locus.add_alerts([p.trigger, *history]))
                        active.append(locus)
                        round_trigger[lid] = p.trigger.alert_id
                        if mm_tags and (lid, p.trigger.alert_id) in mm_tags:
                            round_mm[lid] = mm_tags[(lid, p.trigger.alert_id)]
            with self.metrics.time("filters"):
                report = self.filters.run(active)
            for lid, tags in round_mm.items():  # multi-messenger tags go out with the packet that earned them
                report.tags_by_locus.setdefault(lid, set()).update(tags)
            res.filter_errors += len(report.errors)
            self.metrics.inc("filter_errors", len(report.errors))
            with self.metrics.time("emit"):
                self._queue_tags(loci, report, round_trigger, res)
        return new_alerts

    def dead_letter(self, messages: list[Message], reason: str, text: str) -> BatchResult:
        """Reject whole messages (e.g. one that made a stage fail): DLQ topic + store, counted."""
        res = BatchResult(messages=len(messages))
        letters = [self._letter(m, reason, text) for m in messages]
        res.rejected[reason] += len(letters)
        self.metrics.inc("rejected", len(letters), reason=reason)
        for letter in letters:
            self.sink.publish(self.dead_letter_topic, None, letter.payload, letter.headers)
            self.metrics.inc("dead_letters", reason=letter.reason)
        self.sink.flush()
        res.dead_letters_new = sum(bool(self.store.record_dead_letter(letter)) for letter in letters)
        return res

    # ------------------------------------------------------------------------------------
    def _decode(self, messages: list[Message], res: BatchResult) -> tuple[list[_Decoded], list[DeadLetter]]:
        out: list[_Decoded] = []
        letters: list[DeadLetter] = []
        for msg in messages:
            try:
                packets = decode_message(msg.value, lsst_schema_version=self.lsst_schema_version,
                                         ztf_schema_version=self.ztf_schema_version,
                                         registry=self.schema_registry)
                dropped: Counter = Counter()
                for p in packets:
                    dropped.update(validate_packet(p))
            except DecodeError as exc:
                letters.append(self._letter(msg, exc.reason, str(exc)))
                res.rejected[exc.reason] += 1
                continue
            except Exception as exc:  # a decoder bug must not stop the stream either
                letters.append(self._letter(msg, "internal_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
                res.rejected["internal_error"] += 1
                continue
            if dropped:
                res.history_dropped.update(dropped)
                for reason, n in dropped.items():
                    self.metrics.inc("history_rows_dropped", n, reason=reason)
            if not packets:  # an empty container: nothing to ingest and nothing wrong with it
                res.empty += 1
                continue
            for p in packets:
                out.append(_Decoded(msg, p))
        res.packets = len(out)
        for reason, n in res.rejected.items():
            self.metrics.inc("rejected", n, reason=reason)
        return out, letters

    def _letter(self, msg: Message, reason: str, text: str) -> DeadLetter:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates into the store
        log.warning("rejected %s: %s: %s", msg.origin, reason, text.splitlines()[0] if text else "",
                    extra={"origin": msg.origin, "reason": reason, "partition": msg.partition, "offset": msg.offset})
        return DeadLetter(
            source=msg.origin,
            reason=reason,
            message=text,
            payload=msg.value,
            received_at=time.time(),
            headers={"albireo.reason": reason, "albireo.error": text[:1000], "albireo.origin": msg.origin,
                     "albireo.letter_key": DeadLetter.key_for(msg.origin, msg.value),
                     **({"albireo.source_ts": str(msg.timestamp_ms)} if msg.timestamp_ms is not None else {})},
        )

    def _dedupe(self, decoded: list[_Decoded], res: BatchResult) -> list[_Decoded]:
        """Drop packets whose trigger was already ingested (replays) or repeats within the batch."""
        if not decoded:
            return decoded
        ids = [d.packet.trigger.alert_id for d in decoded]
        # One existence read for the triggers and their histories together (a store answers it per
        # survey object, and a packet's alerts are one object's); the history part is used by
        # association, which leaves already stored history alerts where they are.
        stored = self.store.existing_alert_ids(a for d in decoded for a in (d.packet.trigger, *d.packet.history))
        self._stored_ids = stored
        seen = stored & set(ids)
        if self.exactly_once and seen:
            # A stored packet read again from the same position was stored by an attempt whose Kafka
            # transaction did not commit (its outputs were aborted): re-emit what it produced.
            again = self.store.recorded_outputs([d.message.origin for d in decoded
                                                 if d.packet.trigger.alert_id in seen])
            for outputs in again.values():
                self._outputs.extend(outputs)
                res.reemitted += len(outputs)
        out = []
        for d, aid in zip(decoded, ids, strict=True):
            if aid in seen:
                res.duplicates += 1
                continue
            seen.add(aid)
            out.append(d)
        return out

    def _associate(self, decoded: list[_Decoded]) -> tuple[dict[str, Locus], list[str], dict[str, list[Packet]]]:
        """Find (or found) the locus of every packet, in observation order; load the loci in one read.

        A locus stands at the mean of its detections, so it moves as alerts join it; the loci an
        alert of the batch can reach are loaded first, because their detections are what the
        running mean moves from (see :meth:`Associator.associate`).

        Returns the touched loci by id, the ids of loci founded here, and each touched locus's
        packets in observation order.
        """
        if not decoded:
            return {}, [], {}
        decoded = sorted(decoded, key=lambda d: (d.packet.trigger.mjd, d.packet.trigger.alert_id))
        ra = np.array([d.packet.trigger.ra for d in decoded], dtype=np.float64)
        dec = np.array([d.packet.trigger.dec for d in decoded], dtype=np.float64)
        _, blocks = self.associator.pixels(ra, dec)
        existing = self.store.locus_positions(np.unique(blocks[blocks >= 0]))
        reach = np.flatnonzero(self.associator.reachable(ra, dec, existing))
        loci: dict[str, Locus] = self.store.load_loci(sorted({existing.locus_ids[k] for k in reach}))
        weight = np.full(len(existing.locus_ids), -1.0)
        sums = np.zeros((len(existing.locus_ids), 3))
        objects: list[frozenset[str]] = [frozenset()] * len(existing.locus_ids)
        for k in reach:
            locus = loci.get(existing.locus_ids[k])
            if locus is None:  # claimed by a worker that has not stored it yet: no detection behind it
                weight[k] = 0.0
            else:
                weight[k], sums[k] = locus.position_sums()
                objects[k] = locus.survey_objects()
        existing = LocusPositions(existing.locus_ids, existing.ra, existing.dec, existing.pixel, weight, sums, objects)
        assoc = self.associator.associate(ra, dec, existing, blocks,
                                          objects=[survey_object_key(d.packet.trigger) for d in decoded])

        # Founders claim their place: if another worker founded a locus there
        # meanwhile, the store names it and these alerts join it instead.
        founder_ids = []
        for f in assoc.new_founders:
            t = decoded[f].packet.trigger
            founder_ids.append(make_locus_id(t.alert_id, t.mjd))
        winners = {}
        if founder_ids:
            cands = [(lid, float(ra[f]), float(dec[f])) for lid, f in zip(founder_ids, assoc.new_founders, strict=True)]
            winners = self.store.claim_new_loci(cands, self.associator.radius_arcsec, known=existing)

        lid_of = []
        for i in range(len(decoded)):
            ei = assoc.existing_index[i]
            lid_of.append(existing.locus_ids[ei] if ei >= 0 else winners.get(founder_ids[assoc.new_group[i]],
                                                                             founder_ids[assoc.new_group[i]]))
        touched = list(dict.fromkeys(lid_of))
        missing = [lid for lid in touched if lid not in loci]
        if missing:  # a claim named a locus another worker founded and stored meanwhile
            loci.update(self.store.load_loci(missing))
        loci = {lid: loci[lid] for lid in touched if lid in loci}
        positions = dict(zip(existing.locus_ids, zip(existing.ra, existing.dec, strict=True), strict=True))
        for g, f in enumerate(assoc.new_founders):
            positions.setdefault(founder_ids[g], (ra[f], dec[f]))
        new_ids = []
        for lid in touched:
            if lid not in loci:
                # Founded here, or claimed (position row written) by a worker that has not
                # stored its locus yet, or by an earlier attempt of this batch: start it where
                # its position row is; its first detection moves it onto itself.
                if lid not in positions:
                    positions.update(self._claimed_position(lid, ra, dec, lid_of))
                r, d = (float(x) for x in positions[lid])
                loci[lid] = Locus(locus_id=lid, ra=r, dec=d, stored_position=(r, d))
                new_ids.append(lid)

        # History alerts already stored (in whichever locus) stay where they are.
        stored = self._stored_ids
        groups: dict[str, list[Packet]] = {}
        for d, lid in zip(decoded, lid_of, strict=True):
            p = d.packet
            if stored:
                p = Packet(p.trigger, [h for h in p.history if h.alert_id not in stored], p.schema, p.cutouts)
            groups.setdefault(lid, []).append(p)
        return loci, new_ids, groups

    def _claimed_position(self, lid: str, ra: np.ndarray, dec: np.ndarray, lid_of: list[str]) -> dict:
        """Position of a locus another worker claimed: its stored position row, else our alert's."""
        i = lid_of.index(lid)
        _, blocks = self.associator.pixels(ra[i : i + 1], dec[i : i + 1])
        pos = self.store.locus_positions(blocks[blocks >= 0])
        for k, other in enumerate(pos.locus_ids):
            if other == lid:
                return {lid: (pos.ra[k], pos.dec[k])}
        return {lid: (ra[i], dec[i])}

    def _crossmatch(self, loci: list[Locus], res: BatchResult) -> None:
        """Match loci that were never matched against the current catalog set (positions do not move)."""
        if self.catalogs is None or not loci:
            return
        version = self.catalogs.version
        stale = [x for x in loci if x.catalog_version != version]
        if not stale:
            return
        matches = self.catalogs.match(np.array([x.ra for x in stale]), np.array([x.dec for x in stale]))
        for locus, found in zip(stale, matches, strict=True):
            locus.catalog_objects = found
            locus.catalog_version = version
        res.crossmatched = len(stale)
        self.metrics.inc("crossmatched", len(stale))

    def _queue_tags(self, loci: dict[str, Locus], report: RunReport, triggers: dict[str, str],
                    res: BatchResult) -> None:
        """One output per (locus, tag) the filters set in this round, attributed to the round's packet."""
        for lid, tags in report.tags_by_locus.items():
            msg = self._message_of.get(triggers.get(lid, ""))
            for tag in sorted(tags):
                headers = {"albireo.stream": tag}
                if msg is not None and msg.timestamp_ms is not None:
                    headers["albireo.source_ts"] = str(msg.timestamp_ms)
                for topic, value in self.router.messages(loci[lid], tag):
                    self._outputs.append(Output(topic, lid.encode(), value, headers,
                                                msg.origin if msg is not None else ""))
                    res.published += 1
                    self.metrics.inc("published", stream=tag)
                res.tags[tag] += 1


def _by_origin(outputs: list[Output], origins: list[str]) -> dict[str, list[Output]]:
    """Outputs grouped by input position; every position in ``origins`` present (an empty record counts)."""
    out: dict[str, list[Output]] = {o: [] for o in origins if o}
    for o in outputs:
        if o.origin:
            out.setdefault(o.origin, []).append(o)
    return out
