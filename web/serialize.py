"""Store objects → the JSON shapes ``antares-client`` parses (its pydantic schemas are the contract).

* locus detail  → ``LocusResponse``: ``id``, ``ra``, ``dec``, ``htm16``, ``tags``, ``catalogs``,
  ``grav_wave_events``, ``internal_properties``, ``user_properties``, ``lightcurve`` (CSV text);
* locus in a list → ``LocusNoThumbnailsResponse``: ``{"locus": {locus_id, ra, dec, properties, ...}}``;
* alert → ``AlertResponse``: ``id``, ``mjd``, ``created_at``, ``properties``, ``survey``,
  ``grav_wave_events``;
* catalog match → ``LocusCatalogObjectMatchResponse``.

Each resource also carries JSON:API's ``type`` (extra keys are ignored by the client).
"""

from __future__ import annotations

import csv
import datetime
import io
import math
from typing import Any

import numpy as np

from broker.alert import SURVEY_NAMES, Alert
from broker.crossmatch.catalogset import DIST_KEY
from broker.locus import Locus, mjd_to_datetime

LIGHTCURVE_COLUMNS = ("alert_id", "ant_mjd", "ant_survey", "ant_ra", "ant_dec", "ant_passband", "ant_mag",
                      "ant_magerr", "ant_maglim", "ant_mag_corrected", "ant_magerr_corrected",
                      "ant_magulim_corrected", "ant_magllim_corrected")


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python, recursively."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def htm16(ra: float, dec: float) -> int | None:
    """ANTARES exposes an HTM16 id; we have no HTM library, so the HEALPix order-16 nested id stands in."""
    from broker.association import pixels_of

    return int(pixels_of(np.array([ra]), np.array([dec]), 16)[0])


_LC_CACHE: dict[tuple[str, int, str], str] = {}
_LC_CACHE_MAX = 256


def lightcurve_csv(locus: Locus) -> str:
    """The devkit light curve, cached per (locus, alert count, newest alert): the devkit's magnitude
    corrections cost ~0.5 ms per alert, and a locus only changes when an alert arrives."""
    if not locus.alerts:
        return ""
    key = (locus.locus_id, len(locus.alerts), locus.alerts[-1].alert_id)
    hit = _LC_CACHE.get(key)
    if hit is None:
        hit = _lightcurve_csv(locus)
        if len(_LC_CACHE) >= _LC_CACHE_MAX:
            _LC_CACHE.pop(next(iter(_LC_CACHE)))
        _LC_CACHE[key] = hit
    return hit


def _lightcurve_csv(locus: Locus) -> str:
    """The devkit light curve (all surveys, corrected magnitudes where the devkit computes them) as CSV."""
    try:
        lc = locus.lightcurve(survey="all")
        cols = {c: np.ma.filled(np.ma.asarray(lc[c]).astype(object), None) for c in LIGHTCURVE_COLUMNS}
    except Exception:  # noqa: BLE001 - a survey the devkit cannot correct still gets its raw light curve
        cols = {c: [a.properties.get(c, a.alert_id if c == "alert_id" else None) for a in locus.alerts]
                for c in LIGHTCURVE_COLUMNS}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LIGHTCURVE_COLUMNS)
    n = len(cols["alert_id"])
    for i in range(n):
        row = []
        for c in LIGHTCURVE_COLUMNS:
            v = clean(cols[c][i])
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()


def locus_detail(locus: Locus, with_lightcurve: bool = True) -> dict[str, Any]:
    return clean({
        "type": "locus",
        "id": locus.locus_id,
        "locus_id": locus.locus_id,
        "ra": locus.ra,
        "dec": locus.dec,
        "htm16": htm16(locus.ra, locus.dec),
        "tags": sorted(locus.user_tags),
        "catalogs": sorted(locus.catalog_objects),
        "grav_wave_events": sorted(locus.grav_wave_events_metadata),
        "internal_properties": locus.internal_properties,
        "user_properties": locus.user_properties,
        "lightcurve": lightcurve_csv(locus) if with_lightcurve else "",
        "provenance": {k: vars(v) for k, v in locus.provenance.items()},
    })


def locus_hit(doc: dict[str, Any]) -> dict[str, Any]:
    """An index document → one element of ``GET /v2/loci``."""
    return clean({
        "type": "locus_listing",
        "id": doc["locus_id"],
        "locus": {
            "locus_id": doc["locus_id"],
            "ra": doc["ra"],
            "dec": doc["dec"],
            "htm16": None,
            "properties": doc.get("properties") or {},
            "tags": doc.get("tags") or [],
            "grav_wave_events": doc.get("grav_wave_events") or [],
            "catalogs": doc.get("catalogs") or [],
        },
    })


def _created_at(a: Alert) -> str:
    """When the broker processed the alert; we keep no wall-clock ingest time, so the observation time."""
    try:
        return mjd_to_datetime(a.mjd).replace(tzinfo=datetime.UTC).isoformat()
    except (OverflowError, ValueError):
        return "1970-01-01T00:00:00+00:00"


def alert_json(a: Alert) -> dict[str, Any]:
    return clean({
        "type": "alert",
        "id": a.alert_id,
        "mjd": a.mjd,
        "created_at": _created_at(a),
        "properties": a.properties,
        "survey": SURVEY_NAMES.get(a.survey, str(a.survey)),
        "grav_wave_events": a.grav_wave_events or [],
        "is_history": a.is_history,
    })


def catalog_object_name(catalog: str, row: dict[str, Any]) -> str:
    for key in ("name", "object_name", "id", "objname", "designation"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{catalog}:{row.get('ra')}:{row.get('dec')}"


def catalog_match_json(catalog: str, row: dict[str, Any], radius_arcsec: float | None = None) -> dict[str, Any]:
    name = catalog_object_name(catalog, row)
    dist = row.get(DIST_KEY)
    props = {k: v for k, v in row.items() if k != DIST_KEY}
    return clean({
        "type": "catalog_entry",
        "id": f"{catalog}:{name}",
        "object_id": name,
        "object_name": name,
        "catalog_name": catalog,
        "ra": float(row.get("ra", float("nan"))) if row.get("ra") is not None else None,
        "dec": float(row.get("dec", float("nan"))) if row.get("dec") is not None else None,
        "radius": radius_arcsec if radius_arcsec is not None else 0.0,
        "properties": props,
        "extra": {"separation": dist if dist is not None else 0.0},
    })


def catalog_sample_json(catalog: str, row: dict[str, Any]) -> dict[str, Any]:
    name = catalog_object_name(catalog, row)
    return clean({"type": "catalog_entry", "id": f"{catalog}:{name}", "catalog_name": catalog,
                  "properties": {k: v for k, v in row.items() if k != DIST_KEY}})
