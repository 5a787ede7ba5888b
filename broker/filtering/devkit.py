"""Conversions between antares-devkit locus dicts and our :class:`~broker.locus.Locus`.

Used by the compatibility tests and the filter benchmark, which run the devkit's own filters on
the devkit's own real loci through both runners.
"""

from __future__ import annotations

import math
from typing import Any

from broker.locus import Locus


# ---- the devkit's loci ↔ ours ------------------------------------------------------------------
def _devkit_split_properties(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(internal, user) properties of a devkit locus dict, split as ``DevKitLocus`` splits ``old_properties``."""
    internal = dict(d.get("internal_properties") or {})
    user = dict(d.get("user_properties") or {})
    old = d.get("old_properties") or {}
    if old:
        internal = {k: v for k, v in old.items() if k in DEVKIT_INTERNAL_KEYS}
        user = {k: v for k, v in old.items() if k not in DEVKIT_INTERNAL_KEYS}
    return internal, user


#: the keys ``DevKitLocus.model_post_init`` treats as internal when given ``old_properties``.
DEVKIT_INTERNAL_KEYS = frozenset((
    "num_alerts", "num_mag_values", "brightest_alert_id", "brightest_alert_magnitude",
    "brightest_alert_observation_time", "newest_alert_id", "newest_alert_magnitude",
    "newest_alert_observation_time", "oldest_alert_id", "oldest_alert_magnitude", "oldest_alert_observation_time",
    "is_corrected", "survey", "ztf_object_id", "ztf_ssnamenr", "replaced_by",
))


def locus_from_devkit(d: dict[str, Any]) -> Locus:
    """Our :class:`Locus` from a devkit locus dict (what ``DevKitLocus(**d)`` accepts).

    Alerts keep their devkit properties exactly (the canonical fields are read
    from the ``ant_*`` properties) and their order: ``locus.alert`` is the last one.
    """
    from broker.alert import Alert

    alerts = []
    for a in d["alerts"]:
        props = dict(a.get("properties") or {})
        alert = Alert(
            alert_id=a["id"], survey=int(props.get("ant_survey", 0)), mjd=float(a["mjd"]),
            ra=float(props.get("ant_ra", math.nan)), dec=float(props.get("ant_dec", math.nan)),
            passband=str(props.get("ant_passband", "")), mag=props.get("ant_mag"), magerr=props.get("ant_magerr"),
            maglim=props.get("ant_maglim"), object_id=props.get("ztf_object_id") or props.get("lsst_diaObjectId"),
            locus_id=d["id"], grav_wave_events=list(a.get("grav_wave_events") or []),
        )
        alert.properties = props  # exactly the devkit's view, no added defaults
        alerts.append(alert)
    internal, user = _devkit_split_properties(d)
    gw = d.get("grav_wave_events_metadata") or {}
    if not isinstance(gw, dict):
        gw = {g: {"gracedb_id": g} for g in gw}
    return Locus(
        locus_id=d["id"], ra=float(d["ra"]), dec=float(d["dec"]), alerts=alerts,
        internal_properties=internal, user_properties=user, user_tags=set(d.get("user_tags") or []),
        catalog_objects={k: list(v) for k, v in (d.get("catalog_objects") or {}).items()},
        grav_wave_events_metadata={k: (dict(v) if isinstance(v, dict) else {"gracedb_id": k}) for k, v in gw.items()},
        alert_grav_wave_events={a.alert_id: a.grav_wave_events for a in alerts if a.grav_wave_events},
    )


def devkit_dict(locus: Locus) -> dict[str, Any]:
    """The devkit locus dict equivalent to ``locus`` (``DevKitLocus(**devkit_dict(locus))``)."""
    import datetime

    gw = {}
    for k, v in locus.grav_wave_events_metadata.items():
        gw[k] = {"gracedb_id": k, "notice_type": str(v.get("notice_type", "UPDATE")),
                 "notice_datetime": v.get("notice_datetime") or datetime.datetime(1970, 1, 1)}
    return {
        "id": locus.locus_id, "ra": locus.ra, "dec": locus.dec,
        "alerts": [{"id": a.alert_id, "mjd": a.mjd, "properties": dict(a.properties),
                    "grav_wave_events": list(a.grav_wave_events)} for a in locus.alerts],
        "catalog_objects": {k: list(v) for k, v in locus.catalog_objects.items()},
        "internal_properties": dict(locus.internal_properties),
        "user_properties": dict(locus.user_properties),
        "user_tags": set(locus.user_tags),
        "grav_wave_events_metadata": gw,
    }
