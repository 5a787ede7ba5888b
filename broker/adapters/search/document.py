"""The one document per locus that every index stores (SQLite and Elasticsearch alike)."""

from __future__ import annotations

from typing import Any

from broker.locus import Locus


def locus_document(locus: Locus) -> dict[str, Any]:
    """The one document per locus that every index stores."""
    props = locus.properties
    return {
        "locus_id": locus.locus_id,
        "ra": locus.ra,
        "dec": locus.dec,
        "tags": sorted(locus.user_tags),
        "catalogs": sorted(locus.catalog_objects),
        "properties": props,
        "num_alerts": props.get("num_alerts", len(locus.alerts)),
        "first_alert_mjd": props.get("oldest_alert_observation_time"),
        "last_alert_mjd": props.get("newest_alert_observation_time"),
        "ztf_object_id": props.get("ztf_object_id"),
        "lsst_dia_object_id": props.get("lsst_dia_object_id"),
        "grav_wave_events": list(locus.grav_wave_events_metadata),
        "neutrino_events": list(locus.neutrino_events_metadata),
        #: every multi-messenger event the locus lies in (what ``LocusQuery.events`` matches).
        "events": sorted({*locus.grav_wave_events_metadata, *locus.neutrino_events_metadata}),
    }


def event_document(event: dict[str, Any]) -> dict[str, Any]:
    """The one document per multi-messenger event (from its stored record: ``multimessenger.revisions``)."""
    summary = event.get("summary") or {}
    meta = event.get("metadata") or {}
    center = summary.get("center") or [None, None]
    return {
        "doc_type": "event",
        "event_id": event["event_id"],
        "name": event.get("name") or event["event_id"],
        "messenger": event.get("messenger"),
        "mission": event.get("mission"),
        "status": event.get("status"),
        "test": bool(event.get("test")),
        "event_time": event.get("event_time"),
        "event_mjd": event.get("event_mjd"),
        "created": event.get("created"),
        "current_kind": event.get("current_kind"),
        "notices": event.get("notices"),
        "far": meta.get("far"),
        "ra": center[0],
        "dec": center[1],
        "area50": (summary.get("areas") or {}).get("50"),
        "area90": (summary.get("areas") or {}).get("90"),
        "shape": summary.get("shape"),
    }
