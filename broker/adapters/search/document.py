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
    }
