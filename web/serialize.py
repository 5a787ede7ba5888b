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


#: the alert properties the devkit's ``original_correct_mags`` reads.
_CORRECTION_INPUTS = ("ztf_fid", "ztf_field", "ztf_rcid", "ztf_distpsnr1", "ztf_distnr", "ztf_sgscore1",
                      "ztf_magnr", "ztf_sigmagnr", "ztf_isdiffpos", "ztf_magpsf", "ztf_sigmapsf", "ztf_diffmaglim")


class _Frame:
    """Quacks like the TimeSeries ``original_correct_mags`` expects (it only calls ``to_pandas``).

    Building an astropy TimeSeries of every alert property (~200 columns for ZTF) costs ~10 ms
    per alert; the correction reads 12 of them, so a DataFrame of just those (plus the light-curve
    columns) gives the devkit the same input for a fraction of the cost. ``tests/web`` checks the
    result against ``Locus.lightcurve`` for every sample locus.
    """

    def __init__(self, alerts: list[Alert]):
        import pandas as pd

        names = list(dict.fromkeys(LIGHTCURVE_COLUMNS[1:9] + _CORRECTION_INPUTS))
        data = {"alert_id": [a.alert_id for a in alerts]}
        for n in names:
            data[n] = [a.properties.get(n) for a in alerts]
        df = pd.DataFrame(data)
        for n in names:
            if n not in ("ant_passband", "ztf_isdiffpos") and df[n].dtype == object:
                df[n] = pd.to_numeric(df[n], errors="coerce")
        self.df = df

    def to_pandas(self):
        return self.df.copy()


def _lightcurve_csv(locus: Locus) -> str:
    """The devkit light curve (all surveys; corrected magnitudes as the devkit computes them) as CSV."""
    import contextlib

    import pandas as pd

    frame = _Frame(locus.alerts)
    df = frame.df
    from antares_devkit.models import original_correct_mags

    with contextlib.redirect_stdout(io.StringIO()):
        corrected, _, _ = original_correct_mags(frame)
    for c in LIGHTCURVE_COLUMNS[9:]:
        df[c] = pd.to_numeric(corrected[c], errors="coerce").to_numpy()
    out = df[list(LIGHTCURVE_COLUMNS)].replace([np.inf, -np.inf], np.nan)
    return out.to_csv(index=False, lineterminator="\n", float_format="%.10g")


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
