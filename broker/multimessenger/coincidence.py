"""Coincidences: which alerts lie in which event's credible region, and what that does to a locus.

Shared by both directions: the locus side (:class:`CoincidenceStage`, a pipeline stage between
crossmatch and filters: every alert the pipeline adds is tested against every active event in
its time window) and the notice side (:mod:`broker.multimessenger.stage`: a new localization is
tested against the stored loci the index finds inside it).

What a coincidence writes on a locus, in ANTARES's shape:

* GW events: ``locus.alert_grav_wave_events[alert_id]`` (and so ``alert.grav_wave_events``) gets
  ``{gracedb_id, contour_level, contour_area}``; ``locus.grav_wave_events_metadata[gracedb_id]``
  the notice metadata (``notice_type``, ``notice_datetime``, ``false_alarm_rate``, ...);
* neutrino events: the same in ``alert_neutrino_events`` / ``neutrino_events_metadata``, keyed
  ``event_id``;
* tags ``in_<messenger>_<level>`` (``in_gw_90``, ``in_neutrino_50`` ...) for every configured
  level that some alert's ``contour_level`` reaches, with provenance ``multimessenger``.

Only alerts with a position of their own (detections; an upper limit is no sign of activity),
inside ``max_level`` (default 90 %) of an event, and within the event's time window
(``[t - before, t + after]`` days), are recorded. Tags are recomputed from the recorded entries,
so removing an event (a retraction, or a superseding localization) removes exactly its tags.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import broker
from broker.locus import EventMetadata, Locus, Provenance
from broker.multimessenger.localization import Localization, build
from broker.multimessenger.notice import GW, NEUTRINO, LocalizationSpec, NoticeError, int_id
from broker.ports import Store

log = logging.getLogger("albireo.multimessenger")

#: the provenance "filter" name of the tags this stage sets (and the only tags it ever removes).
PROVENANCE = "multimessenger"
MESSENGERS_WITH_REGIONS = (GW, NEUTRINO)


@dataclass
class Settings:
    """What the stage needs from ``[multimessenger]`` (built by ``broker.assemble``)."""

    #: messenger → (days before, days after) the event time in which alerts count.
    windows: dict[str, tuple[float, float]] = field(default_factory=lambda: {GW: (1.0, 14.0), NEUTRINO: (1.0, 14.0)})
    #: tag levels, percent: ``in_<messenger>_<level>``.
    tag_levels: tuple[float, ...] = (50.0, 90.0)
    #: alerts inside this level (percent) get the event recorded.
    max_level: float = 90.0
    accept_test: bool = False

    @property
    def max_before(self) -> float:
        return max((w[0] for w in self.windows.values()), default=0.0)

    @property
    def max_after(self) -> float:
        return max((w[1] for w in self.windows.values()), default=0.0)


def tag_name(messenger: str, level: float) -> str:
    return f"in_{messenger}_{level:g}"


@dataclass
class ActiveEvent:
    """An event with a localization that alerts are tested against."""

    event_id: str
    messenger: str
    event_mjd: float
    window: tuple[float, float]
    localization: Localization
    metadata: dict[str, Any]
    localization_notice_id: str

    def in_window(self, mjd: np.ndarray) -> np.ndarray:
        return (mjd >= self.event_mjd - self.window[0]) & (mjd <= self.event_mjd + self.window[1])


def locus_metadata(event: dict[str, Any], notice: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata a locus keeps for an event: ANTARES's ``DevkitGravWaveNotice`` fields (and their neutrino twins)."""
    meta = event.get("metadata") or {}
    notice = notice or {}
    base = {
        "notice_type": event.get("current_kind"),
        "notice_datetime": event.get("created"),
        "id": int_id(event.get("current_notice_id") or "0"),
        "event_datetime": event.get("event_time"),
        "false_alarm_rate": meta.get("far"),
        "version_id": int(event.get("notices") or 1),
        "full_notice": notice.get("full_notice"),
    }
    if event.get("messenger") == GW:
        return {"gracedb_id": event["event_id"], **base, "external_coinc": meta.get("external_coinc")}
    return {"event_id": event["event_id"], "name": event.get("name"), "mission": event.get("mission"), **base,
            "signalness": meta.get("p_astro", meta.get("signalness")),
            "energy": meta.get("nu_energy", meta.get("energy"))}


def _entries(locus: Locus, messenger: str) -> dict[str, list[dict]]:
    return locus.alert_grav_wave_events if messenger == GW else locus.alert_neutrino_events


def _metadata(locus: Locus, messenger: str) -> dict[str, Any]:
    return locus.grav_wave_events_metadata if messenger == GW else locus.neutrino_events_metadata


def _key(messenger: str) -> str:
    return "gracedb_id" if messenger == GW else "event_id"


def drop_event(locus: Locus, event_id: str, messenger: str) -> bool:
    """Remove every trace of one event from a locus; True if there was one."""
    found = _metadata(locus, messenger).pop(event_id, None) is not None
    key = _key(messenger)
    entries = _entries(locus, messenger)
    for aid in list(entries):
        kept = [e for e in entries[aid] if e.get(key) != event_id]
        if len(kept) != len(entries[aid]):
            found = True
            if kept:
                entries[aid] = kept
            else:
                del entries[aid]
    return found


def record_event(locus: Locus, event: ActiveEvent, alert_ids: list[str], levels: np.ndarray,
                 areas: np.ndarray) -> None:
    """Record ``event`` for the given alerts of ``locus`` (replacing an earlier record of it)."""
    key = _key(event.messenger)
    entries = _entries(locus, event.messenger)
    for aid, lv, ar in zip(alert_ids, levels.tolist(), areas.tolist(), strict=True):
        row = [e for e in entries.get(aid, []) if e.get(key) != event.event_id]
        row.append({key: event.event_id, "contour_level": round(float(lv), 6), "contour_area": round(float(ar), 6)})
        entries[aid] = row
    _metadata(locus, event.messenger)[event.event_id] = EventMetadata(event.metadata)


def sync_alerts(locus: Locus) -> None:
    """Make every loaded alert's ``grav_wave_events``/``neutrino_events`` equal the locus's records."""
    for a in locus.alerts:
        a.grav_wave_events = list(locus.alert_grav_wave_events.get(a.alert_id, []))
        a.neutrino_events = list(locus.alert_neutrino_events.get(a.alert_id, []))


def retag(locus: Locus, levels: tuple[float, ...], mjd: float | None = None) -> tuple[set[str], set[str]]:
    """Set the ``in_<messenger>_<level>`` tags the recorded entries justify; (gained, lost)."""
    want: dict[str, list[str]] = {}
    for messenger in MESSENGERS_WITH_REGIONS:
        key = _key(messenger)
        best: dict[str, float] = {}
        for row in _entries(locus, messenger).values():
            for e in row:
                best[e[key]] = min(best.get(e[key], math.inf), float(e["contour_level"]))
        for level in levels:
            ids = sorted(k for k, v in best.items() if v <= level)
            if ids:
                want[tag_name(messenger, level)] = ids
    mine = {t for t, p in locus.provenance.items() if p.filter == PROVENANCE and not t.startswith("property:")}
    ours = {tag_name(m, lv) for m in MESSENGERS_WITH_REGIONS for lv in levels}
    lost = {t for t in (mine | (locus.user_tags & ours)) if t not in want and t in locus.user_tags}
    gained = {t for t in want if t not in locus.user_tags}
    for t in lost:
        locus.user_tags.discard(t)
        locus.provenance.pop(t, None)
    for t, ids in want.items():
        locus.user_tags.add(t)
        locus.provenance[t] = Provenance(PROVENANCE, ",".join(ids)[:200], broker.__version__, mjd)
    return gained, lost


def is_infrastructure(exc: BaseException) -> bool:
    """Errors of the store or network (the batch is retried), as the worker decides them."""
    from broker.worker import is_transient

    return is_transient(exc)


class LocalizationCache:
    """Built localizations by (event, localization notice): a map is read and indexed once per worker."""

    def __init__(self, store: Store, size: int = 64):
        self.store = store
        self.size = size
        self._cache: OrderedDict[tuple[str, str], Localization | None] = OrderedDict()

    def get(self, event: dict[str, Any]) -> Localization | None:
        spec_d = event.get("localization")
        nid = event.get("localization_notice_id") or ""
        if not spec_d:
            return None
        key = (event["event_id"], f"{nid}:{spec_d.get('shape')}")
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        loc = self._build(event, spec_d, nid)
        self._cache[key] = loc
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return loc

    def put(self, event: dict[str, Any], loc: Localization) -> None:
        spec_d = event.get("localization") or {}
        self._cache[(event["event_id"], f"{event.get('localization_notice_id') or ''}:{spec_d.get('shape')}")] = loc

    def _build(self, event: dict[str, Any], spec_d: dict[str, Any], nid: str) -> Localization | None:
        spec = LocalizationSpec.from_dict(spec_d)
        try:
            skymap = self.store.notice_skymap(nid) if spec.shape == "map" else None
            if spec.shape == "map" and skymap is None:
                log.warning("event %s: its sky map (notice %s) is not stored", event["event_id"], nid)
                return None
            return build(spec, skymap)
        except NoticeError as exc:
            log.warning("event %s: localization unusable: %s", event["event_id"], exc)
            return None


class CoincidenceStage:
    """The pipeline stage: the batch's new alerts against every active event in their time window.

    One store read per batch (the events whose window can reach the batch's alert times), one
    containment call per active localization over all the batch's positions at once.
    """

    def __init__(self, store: Store, settings: Settings | None = None, metrics: Any = None):
        self.store = store
        self.settings = settings or Settings()
        self.metrics = metrics
        self.localizations = LocalizationCache(store)
        self._meta: dict[tuple[str, str, int], dict[str, Any]] = {}

    def active_events(self, lo_mjd: float, hi_mjd: float) -> list[ActiveEvent]:
        s = self.settings
        out = []
        for ev in self.store.events(since_mjd=lo_mjd - s.max_after, until_mjd=hi_mjd + s.max_before,
                                    status="active"):
            m = ev.get("messenger")
            if m not in s.windows or (ev.get("test") and not s.accept_test):
                continue
            try:
                active = self._active(ev, m)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise  # the worker retries the batch
                # a bad event record must never cost the alerts: skip it, say so, count it
                log.exception("event %s skipped by the coincidence stage", ev.get("event_id"))
                if self.metrics is not None:
                    self.metrics.inc("mm_event_errors", messenger=m)
                continue
            if active is not None:
                out.append(active)
        return out

    def _active(self, ev: dict[str, Any], m: str) -> ActiveEvent | None:
        loc = self.localizations.get(ev)
        if loc is None:
            return None
        key = (ev["event_id"], ev.get("current_notice_id") or "", int(ev.get("notices") or 0))
        meta = self._meta.get(key)
        if meta is None:
            nid = ev.get("current_notice_id")
            meta = self._meta[key] = locus_metadata(ev, self.store.notice(nid) if nid else None)
            if len(self._meta) > 4 * self.localizations.size:
                self._meta.pop(next(iter(self._meta)))
        return ActiveEvent(ev["event_id"], m, float(ev["event_mjd"]), tuple(self.settings.windows[m]), loc, meta,
                           ev.get("localization_notice_id") or "")

    def run(self, loci: dict[str, Locus], groups: dict[str, list[Any]]) -> dict[tuple[str, str], set[str]]:
        """Record coincidences of the batch's alerts; (locus id, trigger alert id) → tags gained then."""
        rows: list[tuple[str, str, str, float, float, float]] = []  # lid, trigger id, alert id, ra, dec, mjd
        for lid, packets in groups.items():
            for p in packets:
                for a in p.alerts:
                    if math.isfinite(a.ra) and math.isfinite(a.dec):  # detections: upper limits are no activity
                        rows.append((lid, p.trigger.alert_id, a.alert_id, a.ra, a.dec, a.mjd))
        if not rows:
            return {}
        mjd = np.array([r[5] for r in rows], dtype=float)
        events = self.active_events(float(np.nanmin(mjd)), float(np.nanmax(mjd)))
        if not events:
            return {}
        ra = np.array([r[3] for r in rows], dtype=float)
        dec = np.array([r[4] for r in rows], dtype=float)
        touched: dict[str, str] = {}  # lid → first trigger id that matched
        for ev in events:
            idx = np.flatnonzero(ev.in_window(mjd))
            if idx.size == 0:
                continue
            level, area = ev.localization.containment(ra[idx], dec[idx])
            hit = level <= self.settings.max_level
            if not hit.any():
                continue
            by_locus: dict[str, list[int]] = {}
            for k in np.flatnonzero(hit).tolist():
                by_locus.setdefault(rows[idx[k]][0], []).append(k)
            for lid, ks in by_locus.items():
                record_event(loci[lid], ev, [rows[idx[k]][2] for k in ks], level[ks], area[ks])
                touched.setdefault(lid, rows[idx[ks[0]]][1])
            if self.metrics is not None:
                self.metrics.inc("mm_coincidences", int(hit.sum()), messenger=ev.messenger)
        out: dict[tuple[str, str], set[str]] = {}
        for lid, trigger in touched.items():
            gained, _ = retag(loci[lid], self.settings.tag_levels)
            if gained:
                out[(lid, trigger)] = gained
        return out
