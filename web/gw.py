"""Gravitational-wave notices for ``/v2/grav_wave_notice``: found through the loci that carry them.

The multi-messenger stage stores each GW event's notice metadata on the loci inside its credible
region (``Locus.grav_wave_events_metadata``, the devkit shape). Until a dedicated notice store
exists, a notice is read from one such locus: the index finds a locus listing the GraceDB id,
the store gives its metadata. Shapes follow ``antares-client``'s ``GravWaveNoticeResponse``.
"""

from __future__ import annotations

import datetime
from typing import Any

from broker.ports import LocusQuery
from web.backend import Backend
from web.serialize import clean


def _locus_ids_with_event(b: Backend, gracedb_id: str, limit: int = 5) -> list[str]:
    res = b.index.search(LocusQuery(events=[gracedb_id], limit=limit))
    return [h["locus_id"] for h in res.hits]


def _notices(b: Backend, gracedb_id: str) -> list[dict[str, Any]]:
    ids = _locus_ids_with_event(b, gracedb_id)
    if not ids:
        return []
    out = []
    for locus in b.store.load_loci(ids, with_alerts=False).values():
        meta = locus.grav_wave_events_metadata.get(gracedb_id)
        if isinstance(meta, dict):
            out.append(notice_json(gracedb_id, meta))
    return out


def _dt(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value)


def notice_json(gracedb_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    nt = meta.get("notice_type")
    nt = getattr(nt, "value", nt)
    return clean({
        "type": "grav_wave_notice",
        "id": int(meta.get("id") or 0),
        "gracedb_id": gracedb_id,
        "notice_type": str(nt or "PRELIMINARY"),
        "notice_datetime": _dt(meta.get("notice_datetime")) or "1970-01-01T00:00:00",
        "event_datetime": _dt(meta.get("event_datetime")),
        "false_alarm_rate": meta.get("false_alarm_rate"),
        "skymap_base64": meta.get("skymap_base64"),
        "external_coinc": meta.get("external_coinc"),
        "full_notice": meta.get("full_notice"),
        "version_id": int(meta.get("version_id") or 1),
    })


def latest(b: Backend, gracedb_id: str) -> dict[str, Any] | None:
    notices = _notices(b, gracedb_id)
    return max(notices, key=lambda n: n["notice_datetime"]) if notices else None


def at(b: Backend, gracedb_id: str, when: datetime.datetime) -> dict[str, Any] | None:
    for n in _notices(b, gracedb_id):
        try:
            t = datetime.datetime.fromisoformat(n["notice_datetime"])
        except ValueError:
            continue
        if t.replace(tzinfo=None) == when.replace(tzinfo=None):
            return n
    return None


def coincidences(b: Backend, locus) -> list[dict[str, Any]]:
    """The locus page's multi-messenger table: each event with the alerts inside its region."""
    out = []
    for gid, meta in sorted(locus.grav_wave_events_metadata.items()):
        alerts = [{"alert_id": aid, **ev} for aid, evs in locus.alert_grav_wave_events.items()
                  for ev in evs if ev.get("gracedb_id") == gid]
        out.append({"gracedb_id": gid, "notice": notice_json(gid, meta if isinstance(meta, dict) else {}),
                    "alerts": alerts})
    return out
