"""The notice pipeline: a batch of raw notices in; notices, events and re-tagged loci out.

It is run by the same :class:`~broker.worker.Worker` as the alert pipeline (a consumer group on
the notice topics, or files in embedded mode), so it gets the same batching, retries with
back-off on infrastructure errors, halving down to a poison message, and offset commits after the
work. Per batch:

1. **parse and validate** every message (:func:`~broker.multimessenger.parse.parse_notice`): a
   failure is a dead letter with the schema error (DLQ topic with the original bytes, and the
   store);
2. **sky maps**: an embedded map is read and checked; a ``healpix_url`` is downloaded through the
   :class:`~broker.ports.SkymapFetcher` when enabled (a failure keeps the notice's circle, if any,
   and is recorded on the event);
3. **store** every notice (idempotent by ``notice_id``) and **apply** the batch's notices of each
   event in order (:mod:`~broker.multimessenger.revisions`);
4. **coincide** once per changed event, from what it was before the batch to what it is after:
   the loci listing it are found through the index (``LocusQuery(events=[id])``), the loci inside
   its new credible region and time window through the index too (``LocusQuery(region=…)`` — a
   coarsened MOC of the ``max_level`` region; never a scan of every locus); both are loaded from the
   store, the exact containment of every alert in the window decides, the filters run again on the
   loci that gained the event, and every tag gained is published as any filter's tag is, every tag
   lost (retraction, superseded localization) as an ``untag`` message on that tag's stream;
5. **save** the changed loci and the event, and queue their documents for the index;
6. **outgoing alerts** (when an :class:`~broker.multimessenger.outgoing.publish.AlertPublisher` is
   given): the event's next revision of GCN notices, VOEvent and circular, from the loci found in
   step 4 (the index may not hold them yet), stored and published — only if it changed.

Everything written is keyed (notice id, event id, locus id), so a batch replayed after a crash
ends in the same state.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.locus import Locus
from broker.metrics import Metrics
from broker.multimessenger import revisions
from broker.multimessenger.coincidence import (
    ActiveEvent,
    LocalizationCache,
    Settings,
    drop_event,
    locus_metadata,
    record_event,
    retag,
    sync_alerts,
)
from broker.multimessenger.localization import Localization, build, region_ranges
from broker.multimessenger.notice import DEFAULT_MAX_BYTES, LocalizationSpec, Notice, NoticeError
from broker.multimessenger.parse import parse_notice
from broker.pipeline import BatchResult
from broker.ports import (
    DeadLetter,
    FilterRunner,
    Index,
    IndexWriter,
    LocusQuery,
    Message,
    Sink,
    SkymapFetcher,
    SkyRegion,
    Store,
)

log = logging.getLogger("albireo.notices")

#: how many pixel ranges a region query may use (the MOC is coarsened until it fits).
REGION_RANGES = 500
LOAD_CHUNK = 500
_FITS_SUFFIXES = (".fits", ".fits.gz", ".fits.fz", ".fit", ".fts")


@dataclass
class NoticeSettings:
    coincidence: Settings = field(default_factory=Settings)
    max_bytes: int = DEFAULT_MAX_BYTES
    download_skymaps: bool = True


def looks_like_fits_url(url: str) -> bool:
    path = url.split("?", 1)[0].lower()
    return path.endswith(_FITS_SUFFIXES)


class NoticePipeline:
    """Composes the notice stages over the adapters it is given (see the module docstring)."""

    def __init__(self, store: Store, index: Index, sink: Sink, *, index_writer: IndexWriter | None = None,
                 filters: FilterRunner | None = None, fetcher: SkymapFetcher | None = None,
                 settings: NoticeSettings | None = None, output_prefix: str = "albireo.loci.",
                 dead_letter_topic: str = "albireo.notices.dlq", metrics: Metrics | None = None,
                 alerts: Any = None):
        self.store, self.index, self.sink = store, index, sink
        self.index_writer, self.filters, self.fetcher = index_writer, filters, fetcher
        self.settings = settings or NoticeSettings()
        self.output_prefix, self.dead_letter_topic = output_prefix, dead_letter_topic
        self.metrics = metrics or Metrics()
        #: ``multimessenger.outgoing.publish.AlertPublisher`` (None: no outgoing alerts).
        self.alerts = alerts
        #: failure injection for the fault tests (``broker.faults``); the notice pipeline has no points yet.
        self.faults = None
        self.localizations = LocalizationCache(store)
        #: running totals for summaries (``albireo notices ingest``).
        self.totals: Counter = Counter()

    # ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the filters that re-run on re-tagged loci before the first batch."""
        if self.filters is not None:
            self.filters.prepare()

    def process(self, messages: list[Message]) -> BatchResult:
        m = self.metrics
        res = BatchResult(messages=len(messages))
        m.inc("notice_messages", len(messages))
        letters: list[DeadLetter] = []
        parsed: list[tuple[Message, Notice, bytes | None]] = []
        with m.time("notice_parse"):
            for msg in messages:
                try:
                    n = parse_notice(msg.value, msg.source, self.settings.max_bytes)
                    skymap = self._skymap(n)
                    parsed.append((msg, n, skymap))
                except NoticeError as exc:
                    letters.append(self._letter(msg, exc.reason, str(exc)))
                    res.rejected[exc.reason] += 1
                except Exception as exc:  # a parser bug must not stop the stream
                    letters.append(self._letter(msg, "internal_error",
                                                f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
                    res.rejected["internal_error"] += 1
        for reason, k in res.rejected.items():
            m.inc("notices_rejected", k, reason=reason)
        res.packets = len(parsed)
        with m.time("notice_store"):
            for _, n, skymap in parsed:
                self.store.put_notice(n.record(), skymap)
                m.inc("notices_stored", messenger=n.messenger, format=n.format)
        by_event: dict[str, list[Notice]] = {}
        for _, n, _ in sorted(parsed, key=lambda t: (t[1].event_id, t[1].order_key)):
            by_event.setdefault(n.event_id, []).append(n)
        events_out = []
        for event_id, notices in by_event.items():
            before = self.store.event(event_id)
            after = before
            change = revisions.STALE
            for n in notices:
                after, c = revisions.apply(after, n, window_days=self._window(n.messenger))
                if c != revisions.STALE:
                    change = c
            loc = self._localization(after) if after.get("status") == "active" else None
            if loc is not None and after.get("summary") is None:
                after["summary"] = loc.summary(tuple(self.settings.coincidence.tag_levels))
            carrying: list[Locus] | None = None
            if change != revisions.STALE and (revisions.localization_changed(before, after)
                                              or after.get("status") != (before or {}).get("status")):
                with m.time("notice_coincide"):
                    carrying = self._coincide(before, after, loc, res)
            self.store.put_event(after)
            if self.alerts is not None and change != revisions.STALE:
                with m.time("notice_alerts"):
                    try:
                        _, new = self.alerts.issue(event_id, loci=carrying)
                        m.inc("outgoing_revisions", int(new), messenger=after["messenger"])
                    except NoticeError as exc:  # our alert failed its own schema: said, counted; the event stands
                        log.error("event %s: outgoing alert not issued: %s", event_id, exc)
                        m.inc("outgoing_invalid", messenger=after["messenger"])
            events_out.append(after)
            self.totals[f"events_{change}"] += 1
            log.info("event %s: %s (%d notice(s) in batch, status %s)", event_id, change, len(notices),
                     after.get("status"))
        with m.time("emit"):
            for letter in letters:
                self.sink.publish(self.dead_letter_topic, None, letter.payload, letter.headers)
                m.inc("dead_letters", reason=letter.reason)
            self.sink.flush()
        for letter in letters:
            self.store.record_dead_letter(letter)
        if self.index_writer is not None and events_out:
            self.index_writer.write_events(events_out)
        self.totals.update(notices=len(parsed), rejected=res.rejected_total, loci=res.loci_updated,
                           published=res.published)
        return res

    def dead_letter(self, messages: list[Message], reason: str, text: str) -> BatchResult:
        res = BatchResult(messages=len(messages))
        letters = [self._letter(msg, reason, text) for msg in messages]
        res.rejected[reason] += len(letters)
        for letter in letters:
            self.sink.publish(self.dead_letter_topic, None, letter.payload, letter.headers)
        self.sink.flush()
        for letter in letters:
            self.store.record_dead_letter(letter)
        return res

    # ------------------------------------------------------------------------------------
    def _window(self, messenger: str) -> tuple[float, float]:
        return tuple(self.settings.coincidence.windows.get(messenger, (0.0, 0.0)))

    def _letter(self, msg: Message, reason: str, text: str) -> DeadLetter:
        log.warning("notice rejected %s: %s: %s", msg.origin, reason, text.splitlines()[0] if text else "")
        return DeadLetter(source=msg.origin, reason=reason, message=text, payload=msg.value, received_at=time.time(),
                          headers={"albireo.reason": reason, "albireo.error": text[:1000], "albireo.origin": msg.origin})

    def _skymap(self, n: Notice) -> bytes | None:
        """The notice's map bytes (embedded, or downloaded), checked; a failed download falls back to the circle."""
        spec = n.localization
        data = n.skymap
        if data is None and spec is not None and spec.shape == "map" and spec.skymap_url:
            url = spec.skymap_url
            why = None
            if not self.settings.download_skymaps or self.fetcher is None:
                why = "sky map downloads are off (multimessenger.download_skymaps)"
            elif not looks_like_fits_url(url):
                why = f"{url} does not name a FITS file"
            else:
                try:
                    data = self.fetcher.fetch(url)
                    self.metrics.inc("skymap_downloads", outcome="ok")
                except OSError as exc:
                    why = str(exc)
                    self.metrics.inc("skymap_downloads", outcome="failed")
            if data is None:
                n.metadata["skymap_error"] = why
                n.localization = _fallback(spec)
                log.warning("notice %s (%s): no sky map: %s; %s", n.notice_id, n.event_id, why,
                            "using its error circle" if n.localization else "no localization")
        if data is not None:
            # refuse a corrupt map now, with the notice: it would otherwise fail every later batch
            from broker.multimessenger.skymaps import read_skymap

            read_skymap(data)
            n.localization = n.localization or LocalizationSpec(shape="map")
            n.localization.shape = "map"
        return data

    def _localization(self, event: dict[str, Any]) -> Localization | None:
        return self.localizations.get(event)

    # ------------------------------------------------------------------------------------
    def _coincide(self, before: dict[str, Any] | None, after: dict[str, Any], loc: Localization | None,
                  res: BatchResult) -> list[Locus] | None:
        """Move the event's tags from the loci it was on (before) to the loci inside its region now (after).

        Returns the loci that carry the event afterwards (None when the messenger has no coincidences).
        """
        s = self.settings.coincidence
        event_id, messenger = after["event_id"], after["messenger"]
        if messenger not in s.windows:
            return None
        old_ids = self._loci_listing(event_id) if before is not None else []
        active = (after.get("status") == "active" and loc is not None and (s.accept_test or not after.get("test")))
        new_ids: list[str] = []
        ev: ActiveEvent | None = None
        if active:
            nid = after.get("current_notice_id")
            ev = ActiveEvent(event_id, messenger, float(after["event_mjd"]), self._window(messenger), loc,
                             locus_metadata(after, self.store.notice(nid) if nid else None),
                             after.get("localization_notice_id") or "")
            new_ids = self._loci_inside(ev)
        reason = "retraction" if after.get("status") == "retracted" else "superseded"
        ids = list(dict.fromkeys(old_ids + new_ids))
        self.metrics.inc("notice_candidates", len(ids), messenger=messenger)
        carrying: list[Locus] = []
        for i in range(0, len(ids), LOAD_CHUNK):
            chunk = self.store.load_loci(ids[i : i + LOAD_CHUNK])
            carrying += self._update(list(chunk.values()), ev, event_id, messenger, reason, res)
        return carrying

    def _loci_listing(self, event_id: str) -> list[str]:
        return self._page(LocusQuery(events=[event_id], limit=1000, sort="locus_id"))

    def _loci_inside(self, ev: ActiveEvent) -> list[str]:
        depth, ranges = region_ranges(ev.localization.moc(self.settings.coincidence.max_level), REGION_RANGES)
        lo, hi = ev.event_mjd - ev.window[0], ev.event_mjd + ev.window[1]
        q = LocusQuery(region=SkyRegion(depth, [tuple(r) for r in ranges.tolist()]), limit=1000, sort="locus_id",
                       ranges={"newest_alert_observation_time": (lo, None), "oldest_alert_observation_time": (None, hi)})
        return self._page(q)

    def _page(self, q: LocusQuery) -> list[str]:
        out: list[str] = []
        self.index.refresh()
        while True:
            r = self.index.search(q)
            out += [h["locus_id"] for h in r.hits]
            if r.next_cursor is None:
                return out
            q.search_after = r.next_cursor

    def _update(self, loci: list[Locus], ev: ActiveEvent | None, event_id: str, messenger: str, reason: str,
                res: BatchResult) -> list[Locus]:
        s = self.settings.coincidence
        before_tags = {x.locus_id: set(x.user_tags) for x in loci}
        had = {x.locus_id: drop_event(x, event_id, messenger) for x in loci}
        gained_event: list[Locus] = []
        if ev is not None:
            rows = [(x, a) for x in loci for a in x.alerts if np.isfinite(a.ra) and np.isfinite(a.dec)]
            if rows:
                mjd = np.array([a.mjd for _, a in rows], dtype=float)
                ra = np.array([a.ra for _, a in rows], dtype=float)
                dec = np.array([a.dec for _, a in rows], dtype=float)
                idx = np.flatnonzero(ev.in_window(mjd))
                level, area = ev.localization.containment(ra[idx], dec[idx])
                hit = level <= s.max_level
                per: dict[str, tuple[Locus, list[int]]] = {}
                for k in np.flatnonzero(hit).tolist():
                    x = rows[idx[k]][0]
                    per.setdefault(x.locus_id, (x, []))[1].append(k)
                for x, ks in per.values():
                    record_event(x, ev, [rows[idx[k]][1].alert_id for k in ks], level[ks], area[ks])
                    gained_event.append(x)
        changed = []
        lost_by: dict[str, set[str]] = {}
        for x in loci:
            _, lost = retag(x, s.tag_levels)
            sync_alerts(x)
            if had[x.locus_id] or x in gained_event:
                changed.append(x)
            lost_by[x.locus_id] = lost
        publish: dict[str, set[str]] = {x.locus_id: x.user_tags - before_tags[x.locus_id] for x in changed}
        if self.filters is not None and gained_event:
            report = self.filters.run([x for x in gained_event if x.alerts])
            res.filter_errors += len(report.errors)
            for lid, tags in report.tags_by_locus.items():
                publish.setdefault(lid, set()).update(t for t in tags if t not in before_tags.get(lid, set()))
        by_id = {x.locus_id: x for x in changed}
        with self.metrics.time("emit"):
            for lid, tags in publish.items():
                for tag in sorted(tags):
                    self.sink.publish(self.output_prefix + tag, lid.encode(),
                                      encode_action(by_id[lid], tag, "tag", event_id, "coincidence"),
                                      {"albireo.stream": tag, "albireo.action": "tag", "albireo.event": event_id})
                    res.tags[tag] += 1
                    res.published += 1
                    self.metrics.inc("published", stream=tag)
            for lid, tags in lost_by.items():
                for tag in sorted(tags):
                    self.sink.publish(self.output_prefix + tag, lid.encode(),
                                      encode_action(by_id[lid], tag, "untag", event_id, reason),
                                      {"albireo.stream": tag, "albireo.action": "untag", "albireo.event": event_id,
                                       "albireo.reason": reason})
                    res.published += 1
                    self.metrics.inc("untagged", stream=tag)
            self.sink.flush()
        if changed:
            with self.metrics.time("store"):
                self.store.save_batch(changed, [])
            if self.index_writer is not None:
                self.index_writer.write(changed)
        res.loci_updated += len(changed)
        return gained_event


def encode_action(locus: Locus, tag: str, action: str, event_id: str, reason: str) -> bytes:
    """The locus message for ``tag``'s stream, saying in its body what happened and why.

    The usual locus message (``broker.emit``), with three entries added to its ``properties`` map:
    ``mm_action`` (``tag``, or ``untag`` — the locus left the stream: its ``tags`` no longer hold
    ``tag``), ``mm_event`` and ``mm_reason`` (``coincidence``, ``retraction``, ``superseded``). Kafka
    messages carry the same in headers; stream files keep only bodies, so the body must say it.
    """
    from broker.emit import encode_container, locus_message

    msg = locus_message(locus, tag)
    msg["properties"] = dict(msg["properties"], mm_action=action, mm_event=event_id, mm_reason=reason)
    return encode_container(msg)


def _fallback(spec: LocalizationSpec) -> LocalizationSpec | None:
    """The circle or ellipse a map notice also gave (IceCube sends both), or None."""
    if spec.ra is None or spec.dec is None:
        return None
    if spec.a is not None and spec.b is not None:
        return LocalizationSpec(shape="ellipse", ra=spec.ra, dec=spec.dec, a=spec.a, b=spec.b, pa=spec.pa,
                                containment=spec.containment, systematic_included=spec.systematic_included)
    if spec.radius is not None:
        return LocalizationSpec(shape="circle", ra=spec.ra, dec=spec.dec, radius=spec.radius,
                                containment=spec.containment, systematic_included=spec.systematic_included)
    return None


__all__ = ["NoticePipeline", "NoticeSettings", "build"]
