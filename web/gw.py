"""Gravitational-wave notices for ``/v2/grav_wave_notice``, read from the notice store.

Every LVK notice the notice pipeline accepted is stored with its revisions (``Store.notices``)
and its sky map (``Store.notice_skymap``); the shapes follow ``antares-client``'s
``GravWaveNoticeResponse``: ``id`` (an integer), ``gracedb_id``, ``notice_type`` (the client's
``GravWaveNoticeTypes`` values: ``EARLY_WARNING`` …), ``notice_datetime``, ``event_datetime``,
``false_alarm_rate``, ``skymap_base64`` (the multi-order FITS map the client's
``GravWaveNotice.skymap`` reads), ``external_coinc``, ``full_notice`` (the notice without its map)
and ``version_id`` (the revision's position among the event's notices, from 1).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from broker.multimessenger.notice import int_id
from web.backend import Backend
from web.serialize import clean


def _gw_notices(b: Backend, gracedb_id: str) -> list[dict[str, Any]]:
    return [n for n in b.store.notices(gracedb_id) if n.get("messenger") == "gw"]


def notice_json(b: Backend, rec: dict[str, Any], version: int, with_skymap: bool = True) -> dict[str, Any]:
    skymap = b.store.notice_skymap(rec["notice_id"]) if with_skymap and rec.get("has_skymap") else None
    meta = rec.get("metadata") or {}
    return clean({
        "type": "grav_wave_notice",
        "id": int_id(rec["notice_id"]),
        "notice_id": rec["notice_id"],
        "gracedb_id": rec["event_id"],
        "notice_type": rec["kind"],
        "notice_datetime": rec["created"],
        "event_datetime": rec.get("event_time"),
        "false_alarm_rate": meta.get("far"),
        "skymap_base64": base64.b64encode(skymap).decode() if skymap is not None else None,
        "external_coinc": meta.get("external_coinc"),
        "full_notice": rec.get("full_notice"),
        "version_id": version,
        "format": rec.get("format"),
    })


def latest(b: Backend, gracedb_id: str, with_skymap: bool = True) -> dict[str, Any] | None:
    """The event's current notice (the newest revision; a retraction once retracted)."""
    notices = _gw_notices(b, gracedb_id)
    if not notices:
        return None
    event = b.store.event(gracedb_id) or {}
    current = next((n for n in notices if n["notice_id"] == event.get("current_notice_id")), notices[-1])
    return notice_json(b, current, notices.index(current) + 1, with_skymap)


def at(b: Backend, gracedb_id: str, when: datetime.datetime) -> dict[str, Any] | None:
    """The notice issued at ``when`` (the newest of them when several formats share the second)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    notices = _gw_notices(b, gracedb_id)
    hits = [(i, n) for i, n in enumerate(notices)
            if datetime.datetime.fromisoformat(n["created"].replace("Z", "+00:00")) == when]
    if not hits:
        return None
    i, n = hits[-1]
    return notice_json(b, n, i + 1)


def coincidences(b: Backend, locus) -> list[dict[str, Any]]:
    """The locus page's multi-messenger table: each event (GW and neutrino) with the alerts inside its region."""
    out = []
    for messenger, metas, entries, key in (("gw", locus.grav_wave_events_metadata, locus.alert_grav_wave_events,
                                            "gracedb_id"),
                                           ("neutrino", locus.neutrino_events_metadata, locus.alert_neutrino_events,
                                            "event_id")):
        for eid, meta in sorted(metas.items()):
            alerts = sorted(({"alert_id": aid, **ev} for aid, evs in entries.items() for ev in evs if ev.get(key) == eid),
                            key=lambda a: a["contour_level"])
            out.append({"event_id": eid, "messenger": messenger, "name": meta.get("name") or eid,
                        "notice_type": meta.get("notice_type"), "notice_datetime": meta.get("notice_datetime"),
                        "best_level": alerts[0]["contour_level"] if alerts else None, "alerts": alerts})
    return out
